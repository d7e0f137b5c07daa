//! AWS: the EC2NodeClass resolver of `karp run` (karp-aws's provider) and the instance-type
//! catalog `karp plan` reads (built in, or a catalog file), computed per EC2NodeClass with its
//! settings (kubelet block, block devices) since they change capacity and overhead.

use std::collections::BTreeMap;
use std::sync::Arc;

use karp_aws::allocatable::NodeClassSettings;
use karp_aws::nodeclass::EC2NodeClass;
use karp_aws::AwsCloudProvider;
use karp_core::cloud::InstanceType;

use super::NodeClassResolver;
use crate::convert::manifests::{Manifests, Object};
use crate::convert::{ConvertError, InstanceTypeSource, ObjectRef};

/// The label naming a node's EC2NodeClass.
pub const NODE_CLASS_LABEL: &str = "karpenter.k8s.aws/ec2nodeclass";

/// Node class resolution through karp-aws.
#[derive(Debug, Clone)]
pub struct AwsNodeClassResolver {
    provider: Arc<AwsCloudProvider>,
}

impl AwsNodeClassResolver {
    /// Wraps a provider.
    #[must_use]
    pub fn new(provider: Arc<AwsCloudProvider>) -> Self {
        AwsNodeClassResolver { provider }
    }
}

#[async_trait::async_trait]
impl NodeClassResolver for AwsNodeClassResolver {
    fn node_class_label(&self) -> &'static str {
        NODE_CLASS_LABEL
    }

    async fn resolve(
        &self,
        node_class: &EC2NodeClass,
    ) -> Result<karp_aws::nodeclass::EC2NodeClassStatus, String> {
        self.provider
            .resolve_node_class(node_class)
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, node_class: &EC2NodeClass) -> Result<(), String> {
        self.provider
            .delete_node_class(node_class)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Where `karp plan` takes instance types from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CatalogSource {
    /// The built-in AWS us-east-1 catalog ([`karp_aws::catalog::builtin_catalog`]).
    #[default]
    Builtin,
    /// A catalog file's text ([`karp_aws::catalog_file`]); `name` is used in messages.
    File {
        /// The file name.
        name: String,
        /// Its JSON text.
        json: String,
    },
}

/// Instance types from a catalog, per EC2NodeClass of the input (computed once per class).
#[derive(Debug, Clone)]
pub struct AwsCatalog<'a> {
    source: &'a CatalogSource,
    node_classes: BTreeMap<String, (ObjectRef, &'a EC2NodeClass)>,
    computed: BTreeMap<String, Vec<Arc<InstanceType>>>,
}

impl<'a> AwsCatalog<'a> {
    /// The catalog `source` for the EC2NodeClasses among `manifests`.
    #[must_use]
    pub fn from_manifests(manifests: &'a Manifests, source: &'a CatalogSource) -> Self {
        let node_classes = manifests
            .objects
            .iter()
            .filter_map(|l| match &l.object {
                Object::EC2NodeClass(nc) => {
                    Some((l.origin.name.clone(), (l.origin.clone(), nc.as_ref())))
                }
                _ => None,
            })
            .collect();
        AwsCatalog {
            source,
            node_classes,
            computed: BTreeMap::new(),
        }
    }

    fn parse(
        &self,
        settings: &NodeClassSettings,
        nodeclass: &ObjectRef,
    ) -> Result<Vec<Arc<InstanceType>>, ConvertError> {
        let entries = match self.source {
            CatalogSource::Builtin => {
                karp_aws::catalog::builtin_catalog(settings).map_err(|e| {
                    ConvertError::BuildCatalog {
                        nodeclass: Box::new(nodeclass.clone()),
                        reason: e.to_string(),
                    }
                })?
            }
            CatalogSource::File { name, json } => karp_aws::catalog_file::parse(json, settings)
                .map_err(|e| ConvertError::ParseCatalogFile {
                    file: name.clone(),
                    reason: e.to_string(),
                })?,
        };
        Ok(entries
            .iter()
            .map(|e| Arc::new(e.to_instance_type()))
            .collect())
    }
}

impl InstanceTypeSource for AwsCatalog<'_> {
    fn instance_types(
        &mut self,
        nodepool: &ObjectRef,
        node_class: Option<&str>,
    ) -> Result<Vec<Arc<InstanceType>>, ConvertError> {
        let class = node_class.unwrap_or_default();
        if let Some(types) = self.computed.get(class) {
            return Ok(types.clone());
        }
        let Some((nc_origin, nc)) = self.node_classes.get(class) else {
            return Err(ConvertError::ResolveNodeClass {
                nodepool: Box::new(nodepool.clone()),
                name: class.to_string(),
            });
        };
        let settings = nc.spec.settings().map_err(|e| ConvertError::BuildCatalog {
            nodeclass: Box::new(nc_origin.clone()),
            reason: e.to_string(),
        })?;
        let types = self.parse(&settings, nc_origin)?;
        self.computed.insert(class.to_string(), types.clone());
        Ok(types)
    }

    fn check(&mut self) -> Result<(), ConvertError> {
        if let CatalogSource::File { name, json } = self.source {
            karp_aws::catalog_file::parse(json, &NodeClassSettings::default()).map_err(|e| {
                ConvertError::ParseCatalogFile {
                    file: name.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use karp_aws::allocatable::ResourceAmounts;

    #[test]
    fn resource_amounts_convert_field_by_field() {
        let a = ResourceAmounts {
            cpu_millis: 1930,
            memory_bytes: 7 << 30,
            pods: 29,
            ephemeral_storage_bytes: 17 << 30,
            extended: [("nvidia.com/gpu".to_string(), 1), ("zero".to_string(), 0)].into(),
        };
        let r = a.to_core();
        assert_eq!(
            (r.cpu, r.memory, r.pods, r.ephemeral_storage),
            (1930, 7 << 30, 29, 17 << 30)
        );
        assert_eq!(r.extended, [("nvidia.com/gpu".to_string(), 1)].into());
    }
}
