//! EC2NodeClass resolution: subnets and security groups by selector terms, AMIs by alias (public SSM
//! parameters), id, name or tags, and the instance profile, into the node class's status with
//! Karpenter's conditions (`SubnetsReady`, `SecurityGroupsReady`, `AMIsReady`,
//! `InstanceProfileReady`, `Ready`).
//!
//! Selector semantics (Karpenter's): terms are ORed; within a term, every field must match (AND).
//! A tag value `*` matches any value of the key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use aws_sdk_ec2::types::Filter;
use karp_core::labels;
use karp_core::requirements::{Requirement, Requirements};

use crate::allocatable::{AmiFamily, NodeClassSettings};
use crate::catalog::labels as aws_labels;
use crate::error::{AwsError, ErrorKind};
use crate::nodeclass::{
    AMISelectorTerm, Ami, CapacityReservation, Condition, EC2NodeClass, EC2NodeClassSpec,
    EC2NodeClassStatus, NodeSelectorRequirement, PlacementGroup, PlacementGroupSelectorTerm,
    SecurityGroup, SecurityGroupSelectorTerm, Subnet, SubnetSelectorTerm,
};
use crate::sdk::{AwsClients, AwsSettings};

/// One EC2 filter as (name, values); converted to the SDK's `Filter` at the call.
pub type FilterSpec = (String, Vec<String>);

fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<FilterSpec> {
    tags.iter()
        .map(|(k, v)| {
            if v == "*" {
                ("tag-key".to_string(), vec![k.clone()])
            } else {
                (format!("tag:{k}"), vec![v.clone()])
            }
        })
        .collect()
}

/// The `DescribeSubnets` filters of one subnet selector term.
#[must_use]
pub fn subnet_filters(term: &SubnetSelectorTerm) -> Vec<FilterSpec> {
    let mut f = tag_filters(&term.tags);
    if let Some(id) = &term.id {
        f.push(("subnet-id".into(), vec![id.clone()]));
    }
    f
}

/// The `DescribeSecurityGroups` filters of one security group selector term.
#[must_use]
pub fn security_group_filters(term: &SecurityGroupSelectorTerm) -> Vec<FilterSpec> {
    let mut f = tag_filters(&term.tags);
    if let Some(id) = &term.id {
        f.push(("group-id".into(), vec![id.clone()]));
    }
    if let Some(name) = &term.name {
        f.push(("group-name".into(), vec![name.clone()]));
    }
    f
}

/// The `DescribeImages` filters and owners of one AMI selector term (not for aliases).
#[must_use]
pub fn ami_filters(term: &AMISelectorTerm) -> (Vec<FilterSpec>, Vec<String>) {
    let mut f = tag_filters(&term.tags);
    if let Some(id) = &term.id {
        f.push(("image-id".into(), vec![id.clone()]));
    }
    if let Some(name) = &term.name {
        f.push(("name".into(), vec![name.clone()]));
    }
    let owners = match (&term.owner, &term.name, &term.id) {
        (Some(o), _, _) => vec![o.clone()],
        // Karpenter: a name without an owner looks in the account's own and Amazon's images.
        (None, Some(_), None) => vec!["self".into(), "amazon".into()],
        _ => Vec::new(),
    };
    (f, owners)
}

fn sdk_filters(specs: &[FilterSpec]) -> Vec<Filter> {
    specs
        .iter()
        .map(|(name, values)| {
            Filter::builder()
                .name(name)
                .set_values(Some(values.clone()))
                .build()
        })
        .collect()
}

/// One AMI variant an alias resolves to: the SSM parameter holding its id, and the requirements
/// of the instance types it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasParameter {
    /// Full SSM parameter name.
    pub parameter: String,
    /// Requirements of the instance types that use this AMI.
    pub requirements: Requirements,
}

fn arch_req(arch: &str) -> Requirement {
    Requirement::in_values(labels::ARCH, [arch])
}

/// Parses `family@version` and lists the SSM parameters of the AMIs it names, as Karpenter's
/// alias resolution does (`latest` or a pinned release).
///
/// # Errors
/// A message naming what is wrong with the alias.
pub fn alias_parameters(
    alias: &str,
    kubernetes_version: &str,
    prefix: &str,
) -> Result<Vec<AliasParameter>, String> {
    let (family, version) = alias
        .split_once('@')
        .ok_or_else(|| format!("alias {alias:?} must be family@version"))?;
    let family = AmiFamily::from_alias_family(family)
        .ok_or_else(|| format!("alias {alias:?}: unknown family {family:?}"))?;
    if version.is_empty() {
        return Err(format!("alias {alias:?}: empty version"));
    }
    let k8s = kubernetes_version;
    let mut out = Vec::new();
    let mut push = |parameter: String, reqs: Vec<Requirement>| {
        out.push(AliasParameter {
            parameter,
            requirements: Requirements::from_iter(reqs),
        });
    };
    let no_gpu = || Requirement::does_not_exist(aws_labels::INSTANCE_GPU_COUNT);
    let no_accel = || Requirement::does_not_exist(aws_labels::INSTANCE_ACCELERATOR_COUNT);
    match family {
        AmiFamily::AL2023 => {
            let release = |arch: &str, variant: &str| {
                if version == "latest" {
                    "recommended".to_string()
                } else {
                    format!("amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{version}")
                }
            };
            let base = format!("{prefix}/eks/optimized-ami/{k8s}/amazon-linux-2023");
            for (arch, kube_arch) in [("x86_64", "amd64"), ("arm64", "arm64")] {
                push(
                    format!(
                        "{base}/{arch}/standard/{}/image_id",
                        release(arch, "standard")
                    ),
                    vec![arch_req(kube_arch), no_gpu(), no_accel()],
                );
                push(
                    format!("{base}/{arch}/nvidia/{}/image_id", release(arch, "nvidia")),
                    vec![
                        arch_req(kube_arch),
                        Requirement::exists(aws_labels::INSTANCE_GPU_COUNT),
                    ],
                );
            }
            push(
                format!(
                    "{base}/x86_64/neuron/{}/image_id",
                    release("x86_64", "neuron")
                ),
                vec![
                    arch_req("amd64"),
                    Requirement::exists(aws_labels::INSTANCE_ACCELERATOR_COUNT),
                ],
            );
        }
        AmiFamily::AL2 => {
            let release = if version == "latest" {
                "recommended".to_string()
            } else {
                format!("amazon-eks-node-{k8s}-{version}")
            };
            let base = format!("{prefix}/eks/optimized-ami/{k8s}");
            push(
                format!("{base}/amazon-linux-2/{release}/image_id"),
                vec![arch_req("amd64"), no_gpu(), no_accel()],
            );
            push(
                format!(
                    "{base}/amazon-linux-2-gpu/{}/image_id",
                    release.replace("amazon-eks-node-", "amazon-eks-gpu-node-")
                ),
                vec![
                    arch_req("amd64"),
                    Requirement::exists(aws_labels::INSTANCE_GPU_COUNT),
                ],
            );
            push(
                format!(
                    "{base}/amazon-linux-2-arm64/{}/image_id",
                    release.replace("amazon-eks-node-", "amazon-eks-arm64-node-")
                ),
                vec![arch_req("arm64"), no_gpu(), no_accel()],
            );
        }
        AmiFamily::Bottlerocket => {
            let release = if version == "latest" {
                "latest".to_string()
            } else {
                version.trim_start_matches('v').to_string()
            };
            for (arch, kube_arch) in [("x86_64", "amd64"), ("arm64", "arm64")] {
                push(
                    format!("{prefix}/bottlerocket/aws-k8s-{k8s}/{arch}/{release}/image_id"),
                    vec![arch_req(kube_arch), no_gpu()],
                );
                push(
                    format!("{prefix}/bottlerocket/aws-k8s-{k8s}-nvidia/{arch}/{release}/image_id"),
                    vec![
                        arch_req(kube_arch),
                        Requirement::exists(aws_labels::INSTANCE_GPU_COUNT),
                    ],
                );
            }
        }
        AmiFamily::Windows2019 | AmiFamily::Windows2022 | AmiFamily::Windows2025 => {
            if version != "latest" {
                return Err(format!(
                    "alias {alias:?}: Windows aliases only support @latest"
                ));
            }
            let year = &family.name()[7..];
            push(
                format!(
                    "{prefix}/ami-windows-latest/Windows_Server-{year}-English-Core-EKS_Optimized-{k8s}/image_id"
                ),
                vec![arch_req("amd64")],
            );
        }
        AmiFamily::Custom => return Err(format!("alias {alias:?}: Custom has no alias")),
    }
    Ok(out)
}

/// A subnet the node class selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSubnet {
    /// Subnet id.
    pub id: String,
    /// Zone name.
    pub zone: String,
    /// Zone id.
    pub zone_id: Option<String>,
    /// Free IPv4 addresses.
    pub available_ips: i64,
}

/// An AMI the node class selected, with the requirements of the types it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedAmi {
    /// Image id.
    pub id: String,
    /// Image name.
    pub name: Option<String>,
    /// Creation date (RFC 3339) for newest-first ordering.
    pub creation_date: String,
    /// Whether AWS marked it deprecated.
    pub deprecated: bool,
    /// Which instance types it serves (architecture, GPU or not...).
    pub requirements: Requirements,
}

/// A node class resolved against the account: what a launch needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNodeClass {
    /// The node class as given (spec).
    pub node_class: EC2NodeClass,
    /// Allocatable settings from the spec.
    pub settings: NodeClassSettings,
    /// Subnets, most free IPs first.
    pub subnets: Vec<ResolvedSubnet>,
    /// Security groups, by id.
    pub security_groups: Vec<SecurityGroup>,
    /// AMIs, newest first.
    pub amis: Vec<ResolvedAmi>,
    /// Instance profile name.
    pub instance_profile: Option<String>,
    /// The placement group of `spec.placementGroupSelector`.
    pub placement_group: Option<PlacementGroup>,
    /// Capacity reservations of `spec.capacityReservationSelectorTerms`, by id.
    pub capacity_reservations: Vec<ResolvedCapacityReservation>,
}

/// A capacity reservation the node class selected, with how many instances it can still take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCapacityReservation {
    /// What the status shows.
    pub reservation: CapacityReservation,
    /// `AvailableInstanceCount` when resolved.
    pub available_instances: i64,
}

impl ResolvedNodeClass {
    /// The node class name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.node_class.metadata.name.as_deref().unwrap_or_default()
    }

    /// Zones of the selected subnets.
    #[must_use]
    pub fn zones(&self) -> BTreeSet<String> {
        self.subnets.iter().map(|s| s.zone.clone()).collect()
    }

    /// The subnet a launch in `zone` uses: the one with the most free addresses.
    #[must_use]
    pub fn subnet_for_zone(&self, zone: &str) -> Option<&ResolvedSubnet> {
        self.subnets
            .iter()
            .filter(|s| s.zone == zone)
            .max_by(|a, b| a.available_ips.cmp(&b.available_ips).then(b.id.cmp(&a.id)))
    }

    /// The newest non-deprecated AMI (else newest) serving an instance type with `labels`.
    #[must_use]
    pub fn ami_for(&self, type_requirements: &Requirements) -> Option<&ResolvedAmi> {
        let fits = |a: &&ResolvedAmi| type_requirements.intersects(&a.requirements);
        self.amis
            .iter()
            .filter(|a| !a.deprecated)
            .find(fits)
            .or_else(|| self.amis.iter().find(fits))
    }

    /// A stable hash of the spec fields that shape launched instances (Karpenter's
    /// `ec2nodeclass-hash`), for static drift detection.
    #[must_use]
    pub fn spec_hash(&self) -> String {
        let spec = &self.node_class.spec;
        // Selector terms drive dynamic drift (AMI/subnet/SG ids), so they are not in the hash.
        let relevant = serde_json::json!({
            "amiFamily": spec.ami_family,
            "role": spec.role,
            "instanceProfile": spec.instance_profile,
            "userData": spec.user_data,
            "tags": spec.tags,
            "metadataOptions": spec.metadata_options,
            "blockDeviceMappings": spec.block_device_mappings,
            "instanceStorePolicy": spec.instance_store_policy,
            "detailedMonitoring": spec.detailed_monitoring,
            "associatePublicIPAddress": spec.associate_public_ip_address,
            "kubelet": spec.kubelet,
            "context": spec.context,
        });
        // Fields added after the hash was first computed enter it only when set, so a spec that
        // does not use them keeps its hash (and its nodes) across upgrades. Like Karpenter,
        // placementGroupSelector, capacityReservationSelectorTerms and ipPrefixCount stay out:
        // the first two drift dynamically (the resolved group or reservation changes).
        let mut relevant = relevant;
        if let Some(fields) = relevant.as_object_mut() {
            if !spec.network_interfaces.is_empty() {
                fields.insert(
                    "networkInterfaces".into(),
                    serde_json::json!(spec.network_interfaces),
                );
            }
            if let Some(ct) = &spec.connection_tracking {
                fields.insert("connectionTracking".into(), serde_json::json!(ct));
            }
            if let Some(cpu) = &spec.cpu_options {
                fields.insert("cpuOptions".into(), serde_json::json!(cpu));
            }
        }
        format!("{:016x}", fnv1a(relevant.to_string().as_bytes()))
    }

    /// The selected reservations of `instance_type` in `zone`, by id.
    #[must_use]
    pub fn reservations_for(
        &self,
        instance_type: &str,
        zone: &str,
    ) -> Vec<&ResolvedCapacityReservation> {
        self.capacity_reservations
            .iter()
            .filter(|r| {
                r.reservation.instance_type == instance_type
                    && r.reservation.availability_zone == zone
            })
            .collect()
    }

    /// The status Karpenter would write (all conditions True).
    #[must_use]
    pub fn status(&self) -> EC2NodeClassStatus {
        EC2NodeClassStatus {
            subnets: self
                .subnets
                .iter()
                .map(|s| Subnet {
                    id: s.id.clone(),
                    zone: s.zone.clone(),
                    zone_id: s.zone_id.clone(),
                })
                .collect(),
            security_groups: self.security_groups.clone(),
            amis: self
                .amis
                .iter()
                .map(|a| Ami {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    deprecated: a.deprecated,
                    requirements: a
                        .requirements
                        .to_node_selector()
                        .into_iter()
                        .map(|r| NodeSelectorRequirement {
                            key: r.key,
                            operator: r.operator.as_str().to_string(),
                            values: r.values,
                        })
                        .collect(),
                })
                .collect(),
            instance_profile: self.instance_profile.clone(),
            capacity_reservations: self
                .capacity_reservations
                .iter()
                .map(|r| r.reservation.clone())
                .collect(),
            placement_groups: self.placement_group.iter().cloned().collect(),
            conditions: conditions_of(&condition_types(&self.node_class.spec), &[]),
        }
    }
}

/// The condition types of a node class: [`CONDITION_TYPES`], plus `PlacementGroupReady` when it
/// selects a placement group and `CapacityReservationsReady` when it selects reservations (as
/// Karpenter adds them only then), before `Ready`.
#[must_use]
pub fn condition_types(spec: &EC2NodeClassSpec) -> Vec<&'static str> {
    let mut types: Vec<&'static str> = CONDITION_TYPES[..CONDITION_TYPES.len() - 1].to_vec();
    if !spec.capacity_reservation_selector_terms.is_empty() {
        types.push(CAPACITY_RESERVATIONS_READY);
    }
    if spec.placement_group_selector.is_some() {
        types.push(PLACEMENT_GROUP_READY);
    }
    types.push("Ready");
    types
}

/// The condition of a resolved `spec.placementGroupSelector`.
pub const PLACEMENT_GROUP_READY: &str = "PlacementGroupReady";
/// The condition of resolved `spec.capacityReservationSelectorTerms`.
pub const CAPACITY_RESERVATIONS_READY: &str = "CapacityReservationsReady";

/// 64-bit FNV-1a: a stable, dependency-free hash for names and drift hashes.
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The condition types of an EC2NodeClass, in status order.
pub const CONDITION_TYPES: [&str; 5] = [
    "SubnetsReady",
    "SecurityGroupsReady",
    "AMIsReady",
    "InstanceProfileReady",
    "Ready",
];

/// Conditions with the given failures (type, reason, message); the others are True and `Ready`
/// is False when anything failed.
#[must_use]
pub fn conditions(failures: &[(&str, &str, String)]) -> Vec<Condition> {
    conditions_of(&CONDITION_TYPES, failures)
}

/// [`conditions`] over the given condition types (`Ready` last).
#[must_use]
pub fn conditions_of(types: &[&str], failures: &[(&str, &str, String)]) -> Vec<Condition> {
    let mut out = Vec::new();
    for &t in types {
        let failure = if t == "Ready" {
            failures
                .first()
                .map(|(ft, _, msg)| ("NotReady".to_string(), format!("{ft} is False: {msg}")))
        } else {
            failures
                .iter()
                .find(|(ft, _, _)| *ft == t)
                .map(|(_, r, m)| ((*r).to_string(), m.clone()))
        };
        out.push(match failure {
            Some((reason, message)) => Condition {
                type_: t.to_string(),
                status: "False".into(),
                reason: Some(reason),
                message: Some(message),
                ..Condition::default()
            },
            None => Condition {
                type_: t.to_string(),
                status: "True".into(),
                reason: Some(t.to_string()),
                ..Condition::default()
            },
        });
    }
    out
}

/// The outcome of resolving a node class: the status to write, and what launches need when Ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// Status with conditions (always set).
    pub status: EC2NodeClassStatus,
    /// The resolved node class, or why it is not ready.
    pub resolved: Result<ResolvedNodeClass, String>,
}

/// Resolves a node class against the account. API failures are errors; "nothing matched" and
/// invalid specs are a not-ready [`Resolution`] with False conditions.
///
/// # Errors
/// [`AwsError`] when a Describe or SSM call fails.
pub async fn resolve_node_class(
    clients: &AwsClients,
    settings: &AwsSettings,
    node_class: &EC2NodeClass,
) -> Result<Resolution, AwsError> {
    let spec = &node_class.spec;
    let mut failures: Vec<(&str, &str, String)> = Vec::new();
    let nc_settings = match spec.settings() {
        Ok(s) => Some(s),
        Err(e) => {
            failures.push(("AMIsReady", "InvalidSpec", e.to_string()));
            None
        }
    };

    let subnets = describe_subnets(clients, &spec.subnet_selector_terms).await?;
    if spec.subnet_selector_terms.is_empty() {
        failures.push((
            "SubnetsReady",
            "SubnetsNotFound",
            "spec.subnetSelectorTerms is empty".into(),
        ));
    } else if subnets.is_empty() {
        failures.push((
            "SubnetsReady",
            "SubnetsNotFound",
            "no subnet matches spec.subnetSelectorTerms".into(),
        ));
    }
    let security_groups =
        describe_security_groups(clients, &spec.security_group_selector_terms).await?;
    if security_groups.is_empty() {
        failures.push((
            "SecurityGroupsReady",
            "SecurityGroupsNotFound",
            "no security group matches spec.securityGroupSelectorTerms".into(),
        ));
    }
    let amis = match describe_amis(clients, settings, &spec.ami_selector_terms).await? {
        Ok(a) if a.is_empty() => {
            failures.push((
                "AMIsReady",
                "AMINotFound",
                "no AMI matches spec.amiSelectorTerms".into(),
            ));
            a
        }
        Ok(a) => a,
        Err(msg) => {
            failures.push(("AMIsReady", "InvalidAlias", msg));
            Vec::new()
        }
    };
    let instance_profile = match (&spec.instance_profile, &spec.role) {
        (Some(p), _) => Some(p.clone()),
        // Karpenter creates and owns an instance profile for the role.
        (None, Some(role)) => {
            let name = node_class.metadata.name.as_deref().unwrap_or_default();
            match ensure_instance_profile(clients, settings, name, role).await? {
                Ok(profile) => Some(profile),
                Err(msg) => {
                    failures.push(("InstanceProfileReady", "RoleNotFound", msg));
                    None
                }
            }
        }
        (None, None) => {
            failures.push((
                "InstanceProfileReady",
                "InstanceProfileNotFound",
                "neither spec.role nor spec.instanceProfile is set".into(),
            ));
            None
        }
    };
    let placement_group = match &spec.placement_group_selector {
        None => None,
        Some(term) => match describe_placement_group(clients, term).await? {
            Some(pg) => Some(pg),
            None => {
                failures.push((
                    PLACEMENT_GROUP_READY,
                    "PlacementGroupNotFound",
                    format!(
                        "placement group {:?} not found (or not available)",
                        term.name
                            .as_deref()
                            .or(term.id.as_deref())
                            .unwrap_or_default()
                    ),
                ));
                None
            }
        },
    };
    let capacity_reservations =
        describe_capacity_reservations(clients, &spec.capacity_reservation_selector_terms).await?;
    let mut status = EC2NodeClassStatus {
        subnets: subnets
            .iter()
            .map(|s| Subnet {
                id: s.id.clone(),
                zone: s.zone.clone(),
                zone_id: s.zone_id.clone(),
            })
            .collect(),
        security_groups: security_groups.clone(),
        instance_profile: instance_profile.clone(),
        capacity_reservations: capacity_reservations
            .iter()
            .map(|r| r.reservation.clone())
            .collect(),
        placement_groups: placement_group.iter().cloned().collect(),
        ..EC2NodeClassStatus::default()
    };
    let resolved = match (failures.is_empty(), nc_settings) {
        (true, Some(nc_settings)) => {
            let r = ResolvedNodeClass {
                node_class: node_class.clone(),
                settings: nc_settings,
                subnets,
                security_groups,
                amis,
                instance_profile,
                placement_group,
                capacity_reservations,
            };
            status = r.status();
            Ok(r)
        }
        _ => {
            status.conditions = conditions_of(&condition_types(spec), &failures);
            let mut why = String::new();
            for (t, _, m) in &failures {
                let _ = write!(why, "{}{t}: {m}", if why.is_empty() { "" } else { "; " });
            }
            Err(why)
        }
    };
    Ok(Resolution { status, resolved })
}

/// The name of the instance profile karp manages for the EC2NodeClass `node_class` in this
/// cluster and region. One profile per node class, as Karpenter v1 does: node classes that share
/// a role never share a profile, so deleting one cannot break another.
#[must_use]
pub fn instance_profile_name(settings: &AwsSettings, node_class: &str) -> String {
    format!(
        "{}_{:016x}",
        settings.cluster_name,
        fnv1a(format!("{}/ec2nodeclass/{node_class}", settings.region).as_bytes())
    )
}

/// Creates (or repairs) the instance profile for `role`: it exists, is tagged as this cluster's,
/// and holds exactly `role`. `Ok(Err(msg))` when the role does not exist.
///
/// # Errors
/// [`AwsError`] when an IAM call fails otherwise.
pub async fn ensure_instance_profile(
    clients: &AwsClients,
    settings: &AwsSettings,
    node_class: &str,
    role: &str,
) -> Result<Result<String, String>, AwsError> {
    let name = instance_profile_name(settings, node_class);
    // A role given as an ARN or with a path is referred to by its last segment.
    let role_name = role.rsplit('/').next().unwrap_or(role);
    let existing = match clients
        .iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
    {
        Ok(out) => out.instance_profile().cloned(),
        Err(e) => {
            let modeled = e.as_service_error().is_some_and(
                aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileError::is_no_such_entity_exception,
            );
            let err = AwsError::from_sdk("GetInstanceProfile", &e);
            if !(modeled || err.kind() == ErrorKind::NotFound) {
                return Err(err);
            }
            None
        }
    };
    let roles: Vec<String> = existing
        .as_ref()
        .map(|p| {
            p.roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect()
        })
        .unwrap_or_default();
    if roles.iter().any(|r| r == role_name) {
        return Ok(Ok(name));
    }
    if existing.is_none() {
        let tags = [
            (settings.cluster_tag_key(), "owned".to_string()),
            (
                "karpenter.k8s.aws/ec2nodeclass".to_string(),
                node_class.to_string(),
            ),
            (
                "topology.kubernetes.io/region".to_string(),
                settings.region.clone(),
            ),
        ];
        let mut req = clients
            .iam
            .create_instance_profile()
            .instance_profile_name(&name)
            .path(format!(
                "/karpenter/{}/{}/",
                settings.region, settings.cluster_name
            ));
        for (k, v) in tags {
            req = req.tags(
                aws_sdk_iam::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| {
                        AwsError::invalid_response("CreateInstanceProfile", e.to_string())
                    })?,
            );
        }
        if let Err(e) = req.send().await {
            let err = AwsError::from_sdk("CreateInstanceProfile", &e);
            if err.kind() != ErrorKind::AlreadyExists {
                return Err(err);
            }
        }
    }
    // An instance profile holds one role: replace a stale one.
    for stale in roles {
        clients
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&name)
            .role_name(&stale)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RemoveRoleFromInstanceProfile", &e))?;
    }
    match clients
        .iam
        .add_role_to_instance_profile()
        .instance_profile_name(&name)
        .role_name(role_name)
        .send()
        .await
    {
        Ok(_) => Ok(Ok(name)),
        Err(e) => {
            let modeled_missing = e.as_service_error().is_some_and(
                aws_sdk_iam::operation::add_role_to_instance_profile::AddRoleToInstanceProfileError::is_no_such_entity_exception,
            );
            let err = AwsError::from_sdk("AddRoleToInstanceProfile", &e);
            match err.kind() {
                _ if modeled_missing => Ok(Err(format!("role {role_name:?} does not exist"))),
                ErrorKind::NotFound => Ok(Err(format!("role {role_name:?} does not exist"))),
                // LimitExceeded: another writer added the role concurrently.
                _ if err.code.as_deref() == Some("LimitExceeded") => Ok(Ok(name)),
                _ => Err(err),
            }
        }
    }
}

/// Deletes the instance profile karp created for the node class `node_class` (when it goes away).
///
/// # Errors
/// [`AwsError`] when an IAM call fails with anything but "not found".
pub async fn delete_instance_profile(
    clients: &AwsClients,
    settings: &AwsSettings,
    node_class: &str,
) -> Result<(), AwsError> {
    let name = instance_profile_name(settings, node_class);
    let roles: Vec<String> = match clients
        .iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
    {
        Ok(out) => out
            .instance_profile()
            .map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        Err(e) => {
            let err = AwsError::from_sdk("GetInstanceProfile", &e);
            let modeled = e.as_service_error().is_some_and(
                aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileError::is_no_such_entity_exception,
            );
            return if modeled || err.kind() == ErrorKind::NotFound {
                Ok(())
            } else {
                Err(err)
            };
        }
    };
    for r in roles {
        clients
            .iam
            .remove_role_from_instance_profile()
            .instance_profile_name(&name)
            .role_name(&r)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RemoveRoleFromInstanceProfile", &e))?;
    }
    if let Err(e) = clients
        .iam
        .delete_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
    {
        let err = AwsError::from_sdk("DeleteInstanceProfile", &e);
        if err.kind() != ErrorKind::NotFound {
            return Err(err);
        }
    }
    Ok(())
}

async fn describe_subnets(
    clients: &AwsClients,
    terms: &[SubnetSelectorTerm],
) -> Result<Vec<ResolvedSubnet>, AwsError> {
    let mut by_id: BTreeMap<String, ResolvedSubnet> = BTreeMap::new();
    for term in terms {
        let subnets = clients
            .ec2
            .describe_subnets()
            .set_filters(Some(sdk_filters(&subnet_filters(term))))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSubnets", &e))?;
        for s in subnets {
            let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) else {
                continue;
            };
            by_id.insert(
                id.to_string(),
                ResolvedSubnet {
                    id: id.to_string(),
                    zone: zone.to_string(),
                    zone_id: s.availability_zone_id().map(str::to_string),
                    available_ips: i64::from(s.available_ip_address_count().unwrap_or(0)),
                },
            );
        }
    }
    let mut out: Vec<ResolvedSubnet> = by_id.into_values().collect();
    out.sort_by(|a, b| b.available_ips.cmp(&a.available_ips).then(a.id.cmp(&b.id)));
    Ok(out)
}

async fn describe_security_groups(
    clients: &AwsClients,
    terms: &[SecurityGroupSelectorTerm],
) -> Result<Vec<SecurityGroup>, AwsError> {
    let mut by_id: BTreeMap<String, SecurityGroup> = BTreeMap::new();
    for term in terms {
        let groups = clients
            .ec2
            .describe_security_groups()
            .set_filters(Some(sdk_filters(&security_group_filters(term))))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeSecurityGroups", &e))?;
        for g in groups {
            if let Some(id) = g.group_id() {
                by_id.insert(
                    id.to_string(),
                    SecurityGroup {
                        id: id.to_string(),
                        name: g.group_name().map(str::to_string),
                    },
                );
            }
        }
    }
    Ok(by_id.into_values().collect())
}

/// Resolves `spec.placementGroupSelector` as Karpenter does: DescribePlacementGroups by id or by
/// name, `state=available` only. `Ok(None)` when no such group is available.
async fn describe_placement_group(
    clients: &AwsClients,
    term: &PlacementGroupSelectorTerm,
) -> Result<Option<PlacementGroup>, AwsError> {
    let req = clients
        .ec2
        .describe_placement_groups()
        .filters(Filter::builder().name("state").values("available").build())
        .set_group_ids(term.id.clone().map(|id| vec![id]))
        .set_group_names(
            term.id
                .is_none()
                .then(|| term.name.clone().map(|n| vec![n]))
                .flatten(),
        );
    let out = match req.send().await {
        Ok(out) => out,
        Err(e) => {
            let err = AwsError::from_sdk("DescribePlacementGroups", &e);
            return if err.kind() == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(err)
            };
        }
    };
    Ok(out.placement_groups().iter().find_map(|g| {
        Some(PlacementGroup {
            id: g.group_id()?.to_string(),
            name: g.group_name().unwrap_or_default().to_string(),
            strategy: g
                .strategy()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            partition_count: g.partition_count().map(i64::from),
            spread_level: g.spread_level().map(|l| l.as_str().to_string()),
            state: g
                .state()
                .map_or_else(|| "available".to_string(), |s| s.as_str().to_string()),
        })
    }))
}

/// The `DescribeCapacityReservations` filters and ids of one capacity reservation selector term
/// (Karpenter's: tags, owner, match criteria, or an id; active reservations only).
#[must_use]
pub fn capacity_reservation_filters(
    term: &crate::nodeclass::CapacityReservationSelectorTerm,
) -> (Vec<FilterSpec>, Vec<String>) {
    let mut f = tag_filters(&term.tags);
    if let Some(owner) = &term.owner_id {
        f.push(("owner-id".into(), vec![owner.clone()]));
    }
    if let Some(c) = &term.instance_match_criteria {
        f.push(("instance-match-criteria".into(), vec![c.clone()]));
    }
    f.push(("state".into(), vec!["active".into()]));
    (f, term.id.iter().cloned().collect())
}

async fn describe_capacity_reservations(
    clients: &AwsClients,
    terms: &[crate::nodeclass::CapacityReservationSelectorTerm],
) -> Result<Vec<ResolvedCapacityReservation>, AwsError> {
    let mut by_id: BTreeMap<String, ResolvedCapacityReservation> = BTreeMap::new();
    for term in terms {
        let (filters, ids) = capacity_reservation_filters(term);
        let found = clients
            .ec2
            .describe_capacity_reservations()
            .set_filters(Some(sdk_filters(&filters)))
            .set_capacity_reservation_ids((!ids.is_empty()).then_some(ids))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await;
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                let err = AwsError::from_sdk("DescribeCapacityReservations", &e);
                if err.kind() == ErrorKind::NotFound {
                    continue;
                }
                return Err(err);
            }
        };
        for r in found {
            let (Some(id), Some(itype), Some(zone)) = (
                r.capacity_reservation_id(),
                r.instance_type(),
                r.availability_zone(),
            ) else {
                continue;
            };
            let end_time = r
                .end_date()
                .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
            by_id.insert(
                id.to_string(),
                ResolvedCapacityReservation {
                    reservation: CapacityReservation {
                        id: id.to_string(),
                        instance_type: itype.to_string(),
                        availability_zone: zone.to_string(),
                        owner_id: r.owner_id().unwrap_or_default().to_string(),
                        instance_match_criteria: r
                            .instance_match_criteria()
                            .map_or_else(|| "open".to_string(), |c| c.as_str().to_string()),
                        reservation_type: r
                            .reservation_type()
                            .map_or_else(|| "default".to_string(), |t| t.as_str().to_string()),
                        // Only active reservations are selected (Karpenter marks capacity
                        // blocks about to end `expiring`; karp does not track that yet).
                        state: "active".into(),
                        end_time,
                    },
                    available_instances: i64::from(r.available_instance_count().unwrap_or(0)),
                },
            );
        }
    }
    Ok(by_id.into_values().collect())
}

fn image_arch_requirements(arch: Option<&str>) -> Requirements {
    let kube = match arch {
        Some("arm64") => "arm64",
        _ => "amd64",
    };
    Requirements::from_iter([arch_req(kube)])
}

/// Resolves AMI terms: `Ok(Err(msg))` for an invalid alias.
async fn describe_amis(
    clients: &AwsClients,
    settings: &AwsSettings,
    terms: &[AMISelectorTerm],
) -> Result<Result<Vec<ResolvedAmi>, String>, AwsError> {
    let mut found: BTreeMap<String, ResolvedAmi> = BTreeMap::new();
    for term in terms {
        if let Some(alias) = &term.alias {
            let params = match alias_parameters(
                alias,
                &settings.kubernetes_version,
                &settings.ssm_parameter_prefix,
            ) {
                Ok(p) => p,
                Err(msg) => return Ok(Err(msg)),
            };
            for p in params {
                let Some(id) = ssm_parameter(clients, &p.parameter).await? else {
                    continue;
                };
                let mut ami = describe_image(clients, &id).await?.unwrap_or(ResolvedAmi {
                    id: id.clone(),
                    name: None,
                    creation_date: String::new(),
                    deprecated: false,
                    requirements: Requirements::new(),
                });
                // The alias variant's requirements are more precise than the image's arch.
                ami.requirements = p.requirements;
                found.entry(id).or_insert(ami);
            }
            continue;
        }
        if let Some(param) = &term.ssm_parameter {
            if let Some(id) = ssm_parameter(clients, param).await? {
                if let Some(ami) = describe_image(clients, &id).await? {
                    found.entry(id).or_insert(ami);
                }
            }
            continue;
        }
        let (filters, owners) = ami_filters(term);
        let images = clients
            .ec2
            .describe_images()
            .set_filters(Some(sdk_filters(&filters)))
            .set_owners((!owners.is_empty()).then_some(owners))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeImages", &e))?;
        // Karpenter keeps the newest image per requirement set (architecture here).
        let mut newest: BTreeMap<String, ResolvedAmi> = BTreeMap::new();
        for img in &images {
            let Some(ami) = to_resolved_ami(img) else {
                continue;
            };
            let key = format!("{:?}", ami.requirements.to_node_selector());
            let keep = newest
                .get(&key)
                .is_none_or(|cur| ami.creation_date > cur.creation_date);
            if keep {
                newest.insert(key, ami);
            }
        }
        for ami in newest.into_values() {
            found.entry(ami.id.clone()).or_insert(ami);
        }
    }
    let mut out: Vec<ResolvedAmi> = found.into_values().collect();
    out.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then(a.id.cmp(&b.id)));
    Ok(Ok(out))
}

fn to_resolved_ami(img: &aws_sdk_ec2::types::Image) -> Option<ResolvedAmi> {
    let id = img.image_id()?.to_string();
    let deprecated = img.deprecation_time().is_some_and(|t| {
        // RFC 3339 strings compare chronologically when both are UTC with the same format.
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now())
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        t < now.as_str()
    });
    Some(ResolvedAmi {
        id,
        name: img.name().map(str::to_string),
        creation_date: img.creation_date().unwrap_or_default().to_string(),
        deprecated,
        requirements: image_arch_requirements(img.architecture().map(|a| a.as_str())),
    })
}

async fn describe_image(clients: &AwsClients, id: &str) -> Result<Option<ResolvedAmi>, AwsError> {
    match clients.ec2.describe_images().image_ids(id).send().await {
        Ok(out) => Ok(out.images().first().and_then(to_resolved_ami)),
        Err(e) => {
            let err = AwsError::from_sdk("DescribeImages", &e);
            if err.kind() == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

async fn ssm_parameter(clients: &AwsClients, name: &str) -> Result<Option<String>, AwsError> {
    match clients.ssm.get_parameter().name(name).send().await {
        Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_string)),
        Err(e) => {
            let modeled_not_found = e.as_service_error().is_some_and(
                aws_sdk_ssm::operation::get_parameter::GetParameterError::is_parameter_not_found,
            );
            let err = AwsError::from_sdk("GetParameter", &e);
            if modeled_not_found || err.kind() == ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_terms_become_filters() {
        let term = SubnetSelectorTerm {
            tags: BTreeMap::from([
                ("karpenter.sh/discovery".to_string(), "demo".to_string()),
                ("tier".to_string(), "*".to_string()),
            ]),
            id: None,
        };
        assert_eq!(
            subnet_filters(&term),
            vec![
                (
                    "tag:karpenter.sh/discovery".to_string(),
                    vec!["demo".to_string()]
                ),
                ("tag-key".to_string(), vec!["tier".to_string()]),
            ]
        );
        let sg = SecurityGroupSelectorTerm {
            name: Some("nodes".into()),
            ..SecurityGroupSelectorTerm::default()
        };
        assert_eq!(
            security_group_filters(&sg),
            vec![("group-name".to_string(), vec!["nodes".to_string()])]
        );
        let ami = AMISelectorTerm {
            name: Some("my-ami-*".into()),
            ..AMISelectorTerm::default()
        };
        let (f, owners) = ami_filters(&ami);
        assert_eq!(f, vec![("name".to_string(), vec!["my-ami-*".to_string()])]);
        assert_eq!(owners, vec!["self", "amazon"]);
    }

    #[test]
    fn aliases_name_the_eks_parameters() {
        let p = alias_parameters("al2023@latest", "1.33", "/aws/service").unwrap();
        let names: Vec<&str> = p.iter().map(|a| a.parameter.as_str()).collect();
        assert!(names.contains(
            &"/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
        ));
        assert!(names.contains(
            &"/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/arm64/standard/recommended/image_id"
        ));
        let pinned = alias_parameters("al2023@v20240807", "1.30", "/p").unwrap();
        assert_eq!(
            pinned[0].parameter,
            "/p/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/amazon-eks-node-al2023-x86_64-standard-1.30-v20240807/image_id"
        );
        let br = alias_parameters("bottlerocket@v1.20.3", "1.31", "/aws/service").unwrap();
        assert_eq!(
            br[0].parameter,
            "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/1.20.3/image_id"
        );
        let win = alias_parameters("windows2022@latest", "1.31", "/aws/service").unwrap();
        assert_eq!(
            win[0].parameter,
            "/aws/service/ami-windows-latest/Windows_Server-2022-English-Core-EKS_Optimized-1.31/image_id"
        );
        assert!(alias_parameters("al2023", "1.33", "/x").is_err());
        assert!(alias_parameters("ubuntu@latest", "1.33", "/x").is_err());
        assert!(alias_parameters("windows2022@v1", "1.33", "/x").is_err());
        // Standard AMIs serve types without GPUs; nvidia ones serve GPU types.
        let std_req = &p[0].requirements;
        let gpu_type = Requirements::from_iter([
            Requirement::in_values(labels::ARCH, ["amd64"]),
            Requirement::in_values(aws_labels::INSTANCE_GPU_COUNT, ["1"]),
        ]);
        assert!(!gpu_type.intersects(std_req));
        assert!(gpu_type.intersects(&p[1].requirements));
    }

    #[test]
    fn conditions_report_the_first_failure_in_ready() {
        let ok = conditions(&[]);
        assert!(ok.iter().all(|c| c.status == "True"));
        let bad = conditions(&[("SubnetsReady", "SubnetsNotFound", "none".into())]);
        let ready = bad.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("SubnetsReady is False: none")
        );
        let amis = bad.iter().find(|c| c.type_ == "AMIsReady").unwrap();
        assert_eq!(amis.status, "True");
    }
}

#[cfg(test)]
pub(crate) mod hash_pin {
    use super::*;

    /// A resolved node class around `yaml` (resolution results do not enter the hash).
    pub(crate) fn resolved(yaml: &str) -> ResolvedNodeClass {
        let node_class: EC2NodeClass = serde_yaml::from_str(yaml).unwrap();
        ResolvedNodeClass {
            settings: node_class.spec.settings().unwrap(),
            node_class,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            amis: Vec::new(),
            instance_profile: None,
            placement_group: None,
            capacity_reservations: Vec::new(),
        }
    }

    const EXISTING: &str = include_str!("../../examples/seed/ec2nodeclass.yaml");

    #[test]
    fn the_hash_of_a_spec_without_the_new_fields_is_unchanged() {
        // Computed on the code before networkInterfaces, placementGroupSelector,
        // connectionTracking, cpuOptions, ipPrefixCount and capacity reservations existed: an
        // upgrade must not drift every node.
        assert_eq!(resolved(EXISTING).spec_hash(), "b9d90f8bbc6673ef");
        let minimal =
            "metadata: {name: a}\nspec:\n  amiSelectorTerms: [{alias: al2023@latest}]\n  role: R\n";
        assert_eq!(resolved(minimal).spec_hash(), "0c26519de3f40ac1");
        // Launch template names (derived from the hash and the template content) are unchanged too.
        let settings = crate::sdk::AwsSettings::new("us-east-1", "pin");
        let name = crate::launch::template_name(
            &settings,
            &resolved(EXISTING),
            "ami-1",
            "dXNlcmRhdGE=",
            &["sg-1".to_string()],
            None,
        );
        assert_eq!(name, "karpenter.k8s.aws/a23565e4cc055da2");
    }

    #[test]
    fn set_launch_fields_change_the_hash_except_where_karpenter_ignores_them() {
        let base = resolved(EXISTING).spec_hash();
        let with = |extra: &str| resolved(&format!("{EXISTING}  {extra}\n")).spec_hash();
        for hashed in [
            "networkInterfaces: [{interfaceType: interface}]",
            "connectionTracking: {udpTimeout: 30}",
            "cpuOptions: {nestedVirtualization: enabled}",
        ] {
            assert_ne!(with(hashed), base, "{hashed}");
        }
        for dynamic in [
            "ipPrefixCount: 2",
            "placementGroupSelector: {name: pg}",
            "capacityReservationSelectorTerms: [{id: cr-1}]",
        ] {
            assert_eq!(with(dynamic), base, "{dynamic}");
        }
    }
}
