//! `karpenter.k8s.aws/v1` `EC2NodeClass` serde types with Karpenter's field names, and the derivation
//! of [`NodeClassSettings`] from a spec.
//!
//! Unknown fields are ignored (fields of Karpenter releases newer than 1.14 deserialize fine);
//! fields of the wrong type are serde errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::allocatable::{AllocatableError, AmiFamily, KubeletSettings, NodeClassSettings};
use crate::quantity;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A Kubernetes quantity as written in the manifest. Deserializes from a string or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct QuantityString(pub String);

impl<'de> Deserialize<'de> for QuantityString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(serde_json::Number),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) => Ok(QuantityString(s)),
            Ok(Raw::N(n)) => Ok(QuantityString(n.to_string())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a quantity string or number",
            )),
        }
    }
}

/// `spec.kubelet.maxPods`: an integer, or (Karpenter HEAD) a CEL expression string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxPods {
    /// A fixed pod count.
    Count(i64),
    /// A CEL expression (not supported by karp yet; [`EC2NodeClassSpec::settings`] rejects it).
    Expression(String),
}

/// An `EC2NodeClass` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClass {
    /// `karpenter.k8s.aws/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `EC2NodeClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object metadata (the subset karp reads).
    #[serde(default)]
    pub metadata: ObjectMetadata,
    /// The spec.
    #[serde(default)]
    pub spec: EC2NodeClassSpec,
    /// The status, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EC2NodeClassStatus>,
}

/// The metadata fields karp reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetadata {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `EC2NodeClass.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassSpec {
    /// `AL2`, `AL2023`, `Bottlerocket`, `Custom`, `Windows2019`, `Windows2022`, `Windows2025`; optional with an alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_family: Option<String>,
    /// AMI selector terms (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ami_selector_terms: Vec<AMISelectorTerm>,
    /// Subnet selector terms (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_selector_terms: Vec<SubnetSelectorTerm>,
    /// Security group selector terms (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_selector_terms: Vec<SecurityGroupSelectorTerm>,
    /// Capacity reservation selector terms (ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// IAM role (Karpenter manages the instance profile); exclusive with `instanceProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// An existing instance profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Custom user data merged with the family's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Tags on instances, volumes and launch templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// IMDS options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_options: Option<MetadataOptions>,
    /// Block device mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// `RAID0` to use instance storage for ephemeral storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_store_policy: Option<String>,
    /// Detailed CloudWatch monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
    /// Public IP association for the primary interface.
    #[serde(
        default,
        rename = "associatePublicIPAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub associate_public_ip_address: Option<bool>,
    /// Kubelet configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
    /// Launch context (reserved for AWS internal use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The network interfaces of launched instances (multi-card and EFA layouts); empty = EC2's
    /// default primary interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The placement group instances launch into, by name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_group_selector: Option<PlacementGroupSelectorTerm>,
    /// Connection-tracking idle timeouts of the instances' network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_tracking: Option<ConnectionTracking>,
    /// CPU options of launched instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_options: Option<CpuOptions>,
    /// IPv4 prefixes (/28) assigned to the primary network interface at launch (prefix delegation).
    #[serde(
        default,
        rename = "ipPrefixCount",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip_prefix_count: Option<i64>,
}

/// `spec.networkInterfaces[].interfaceType`.
pub mod interface_type {
    /// A regular ENA interface.
    pub const INTERFACE: &str = "interface";
    /// An Elastic Fabric Adapter without IP networking.
    pub const EFA_ONLY: &str = "efa-only";
}

/// `spec.networkInterfaces[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// The network card the interface attaches to (0 = the default card).
    #[serde(default)]
    pub network_card_index: i64,
    /// The device index on the card (0 on card 0 = the primary interface).
    #[serde(default)]
    pub device_index: i64,
    /// `interface` or `efa-only` (see [`interface_type`]).
    pub interface_type: String,
}

impl NetworkInterface {
    /// Whether this is the primary interface (card 0, device 0).
    #[must_use]
    pub fn is_primary(&self) -> bool {
        self.network_card_index == 0 && self.device_index == 0
    }
}

/// `spec.placementGroupSelector`: exactly one of `name` or `id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementGroupSelectorTerm {
    /// Placement group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Placement group id (`pg-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `spec.connectionTracking`: idle timeouts in seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionTracking {
    /// Established TCP connections (60–432000).
    #[serde(
        default,
        rename = "tcpEstablishedTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_established_timeout: Option<i64>,
    /// UDP flows classified as streams (60–180).
    #[serde(
        default,
        rename = "udpStreamTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_stream_timeout: Option<i64>,
    /// Other UDP flows (30–60).
    #[serde(
        default,
        rename = "udpTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_timeout: Option<i64>,
}

/// `spec.cpuOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuOptions {
    /// `enabled` or `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_virtualization: Option<String>,
}

/// `spec.amiSelectorTerms[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AMISelectorTerm {
    /// `family@version`, e.g. `al2023@latest`; must be the only term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// AMI ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// AMI name (wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner account or alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Tags (value `*` = any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// SSM parameter holding an AMI ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

/// `spec.subnetSelectorTerms[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSelectorTerm {
    /// Tags (value `*` = any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Subnet ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `spec.securityGroupSelectorTerms[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupSelectorTerm {
    /// Tags (value `*` = any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Security group ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Security group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `spec.capacityReservationSelectorTerms[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservationSelectorTerm {
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Reservation ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Owner account ID.
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// `open` or `targeted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_match_criteria: Option<String>,
}

/// `spec.metadataOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    /// `enabled` / `disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_endpoint: Option<String>,
    /// `enabled` / `disabled`.
    #[serde(
        default,
        rename = "httpProtocolIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_protocol_ipv6: Option<String>,
    /// 1–64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_put_response_hop_limit: Option<i64>,
    /// `required` / `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_tokens: Option<String>,
}

/// `spec.blockDeviceMappings[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// e.g. `/dev/xvda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The EBS volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebs: Option<BlockDevice>,
    /// Whether this is the root volume (at most one).
    #[serde(default, skip_serializing_if = "is_false")]
    pub root_volume: bool,
}

/// `spec.blockDeviceMappings[].ebs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    /// Delete with the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// Encrypt the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// Provisioned IOPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i64>,
    /// KMS key for encryption.
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Snapshot to restore.
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// gp3 throughput in MiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i64>,
    /// Volume size as a quantity, e.g. `30Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<QuantityString>,
    /// `gp3`, `gp2`, `io1`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

/// `spec.kubelet`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// Maximum pods per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<MaxPods>,
    /// Pods per vCPU cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_core: Option<i64>,
    /// System-reserved resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, String>,
    /// Kube-reserved resources.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_hard: BTreeMap<String, String>,
    /// Soft eviction thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    /// Grace periods of the soft thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// Max pod grace period on soft eviction, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i64>,
    /// Image GC high threshold.
    #[serde(
        default,
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_high_threshold_percent: Option<i64>,
    /// Image GC low threshold.
    #[serde(
        default,
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_gc_low_threshold_percent: Option<i64>,
    /// CPU CFS quota enforcement.
    #[serde(
        default,
        rename = "cpuCFSQuota",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_cfs_quota: Option<bool>,
    /// Cluster DNS IPs.
    #[serde(default, rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
}

/// `EC2NodeClass.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    /// Resolved subnets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
    /// Resolved security groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<SecurityGroup>,
    /// Resolved AMIs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<Ami>,
    /// The instance profile in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Resolved capacity reservations (`spec.capacityReservationSelectorTerms`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_reservations: Vec<CapacityReservation>,
    /// The resolved placement group (`spec.placementGroupSelector`), at most one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_groups: Vec<PlacementGroup>,
    /// Conditions (`Ready`, `AMIsReady`, `SubnetsReady`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `status.capacityReservations[]`: an EC2 capacity reservation the node class may launch into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityReservation {
    /// Reservation id (`cr-...`).
    pub id: String,
    /// The reserved instance type.
    pub instance_type: String,
    /// The reservation's zone.
    pub availability_zone: String,
    /// The owning account.
    #[serde(default, rename = "ownerID")]
    pub owner_id: String,
    /// `open` or `targeted`.
    pub instance_match_criteria: String,
    /// `default` (on-demand capacity reservation) or `capacity-block`.
    #[serde(default = "default_reservation_type")]
    pub reservation_type: String,
    /// `active` or `expiring`.
    #[serde(default = "default_reservation_state")]
    pub state: String,
    /// RFC 3339 time the reservation ends, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

fn default_reservation_type() -> String {
    "default".into()
}

fn default_reservation_state() -> String {
    "active".into()
}

/// `status.placementGroups[]`: the placement group the node class launches into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementGroup {
    /// Group id (`pg-...`).
    pub id: String,
    /// Group name.
    pub name: String,
    /// `cluster`, `partition` or `spread`.
    pub strategy: String,
    /// Partitions of a `partition` group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_count: Option<i64>,
    /// `rack` or `host` for a `spread` group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_level: Option<String>,
    /// `available` (the only state karp resolves).
    pub state: String,
}

/// `status.subnets[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// Subnet ID.
    pub id: String,
    /// Zone name.
    #[serde(default)]
    pub zone: String,
    /// Zone ID.
    #[serde(default, rename = "zoneID", skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

/// `status.securityGroups[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    /// Security group ID.
    pub id: String,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `status.amis[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ami {
    /// AMI ID.
    pub id: String,
    /// AMI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the AMI is deprecated.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deprecated: bool,
    /// Instance requirements the AMI supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<NodeSelectorRequirement>,
}

/// A node selector requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    /// Values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A status condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Why an EC2NodeClass spec cannot be turned into allocatable settings. Every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeClassError {
    /// A field has a value karp does not accept.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field path, e.g. `spec.blockDeviceMappings[0].ebs.volumeSize`.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// Neither `spec.amiFamily` nor an alias AMI selector term gives the AMI family.
    #[error("spec.amiFamily: required unless amiSelectorTerms has an alias")]
    MissingAmiFamily,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> NodeClassError {
    NodeClassError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

impl EC2NodeClassSpec {
    /// The AMI family: `spec.amiFamily`, else the family of the alias term (as Karpenter's `AMIFamily()`).
    ///
    /// # Errors
    /// [`NodeClassError`] for an unknown family or alias, or when neither is given.
    pub fn resolved_ami_family(&self) -> Result<AmiFamily, NodeClassError> {
        if let Some(name) = &self.ami_family {
            return AmiFamily::from_name(name).ok_or_else(|| {
                invalid("spec.amiFamily", format!("unsupported AMI family {name:?}"))
            });
        }
        for (i, term) in self.ami_selector_terms.iter().enumerate() {
            if let Some(alias) = &term.alias {
                let family = alias.split('@').next().unwrap_or_default();
                return AmiFamily::from_alias_family(family).ok_or_else(|| {
                    invalid(
                        format!("spec.amiSelectorTerms[{i}].alias"),
                        format!("unsupported alias {alias:?}"),
                    )
                });
            }
        }
        Err(NodeClassError::MissingAmiFamily)
    }

    /// The ephemeral-storage (root) volume size in bytes, following Karpenter's `ephemeralStorage`:
    /// the `rootVolume: true` mapping's size; for `Custom`, the last mapping's size; otherwise the
    /// mapping on the family's ephemeral device (`/dev/xvda` AL2/AL2023, `/dev/xvdb` Bottlerocket,
    /// `/dev/sda1` Windows); else the family default (20Gi; 50Gi on Windows).
    ///
    /// # Errors
    /// [`NodeClassError`] naming `spec.blockDeviceMappings[i].ebs.volumeSize` when a size is not a positive quantity.
    pub fn root_volume_bytes(&self, family: AmiFamily) -> Result<i64, NodeClassError> {
        let size = |i: usize, m: &BlockDeviceMapping| -> Result<Option<i64>, NodeClassError> {
            let Some(q) = m.ebs.as_ref().and_then(|e| e.volume_size.as_ref()) else {
                return Ok(None);
            };
            let field = format!("spec.blockDeviceMappings[{i}].ebs.volumeSize");
            let bytes = quantity::parse_value(&q.0).map_err(|e| invalid(&field, e.to_string()))?;
            if bytes <= 0 {
                return Err(invalid(field, format!("must be positive, got {:?}", q.0)));
            }
            Ok(Some(bytes))
        };
        let mappings = &self.block_device_mappings;
        if let Some((i, m)) = mappings.iter().enumerate().find(|(_, m)| m.root_volume) {
            if let Some(b) = size(i, m)? {
                return Ok(b);
            }
        }
        if !mappings.is_empty() {
            if family == AmiFamily::Custom {
                let i = mappings.len() - 1;
                return Ok(size(i, &mappings[i])?.unwrap_or(20 << 30));
            }
            let device = family.ephemeral_block_device();
            if let Some((i, m)) = mappings
                .iter()
                .enumerate()
                .find(|(_, m)| m.device_name.as_deref() == Some(device))
            {
                if let Some(b) = size(i, m)? {
                    return Ok(b);
                }
            }
        }
        Ok(family.default_ephemeral_volume_bytes())
    }

    /// The kubelet settings used by the allocatable formula.
    ///
    /// # Errors
    /// [`NodeClassError`] naming the `spec.kubelet` field (CEL `maxPods` expressions are not supported yet).
    pub fn kubelet_settings(&self) -> Result<KubeletSettings, NodeClassError> {
        let Some(k) = &self.kubelet else {
            return Ok(KubeletSettings::default());
        };
        let max_pods = match &k.max_pods {
            None => None,
            Some(MaxPods::Count(n)) => Some(*n),
            Some(MaxPods::Expression(e)) => {
                return Err(invalid(
                    "spec.kubelet.maxPods",
                    format!("CEL expressions are not supported by karp yet: {e:?}"),
                ))
            }
        };
        Ok(KubeletSettings {
            max_pods,
            pods_per_core: k.pods_per_core,
            kube_reserved: k.kube_reserved.clone(),
            system_reserved: k.system_reserved.clone(),
            eviction_hard: k.eviction_hard.clone(),
            eviction_soft: k.eviction_soft.clone(),
        })
    }

    /// Checks the launch-template fields the CRD's schema and CEL rules also check (node classes
    /// read from files never meet the API server): `networkInterfaces`, `placementGroupSelector`,
    /// `connectionTracking`, `cpuOptions` and `ipPrefixCount`.
    ///
    /// # Errors
    /// [`NodeClassError::InvalidField`] naming the first offending field.
    pub fn validate_launch_fields(&self) -> Result<(), NodeClassError> {
        let nics = &self.network_interfaces;
        for (i, n) in nics.iter().enumerate() {
            let at = |f: &str| format!("spec.networkInterfaces[{i}].{f}");
            if n.interface_type != interface_type::INTERFACE
                && n.interface_type != interface_type::EFA_ONLY
            {
                return Err(invalid(
                    at("interfaceType"),
                    format!("must be interface or efa-only, got {:?}", n.interface_type),
                ));
            }
            for (f, v) in [
                ("networkCardIndex", n.network_card_index),
                ("deviceIndex", n.device_index),
            ] {
                if v < 0 {
                    return Err(invalid(at(f), format!("must not be negative, got {v}")));
                }
            }
            if nics[..i].iter().any(|m| {
                m.network_card_index == n.network_card_index && m.device_index == n.device_index
            }) {
                return Err(invalid(
                    "spec.networkInterfaces",
                    "networkCardIndex/deviceIndex combinations must be unique",
                ));
            }
            if n.interface_type == interface_type::EFA_ONLY
                && nics[..i].iter().any(|m| {
                    m.interface_type == interface_type::EFA_ONLY
                        && m.network_card_index == n.network_card_index
                })
            {
                return Err(invalid(
                    "spec.networkInterfaces",
                    "a network card can have at most one efa-only interface",
                ));
            }
        }
        if !nics.is_empty()
            && !nics
                .iter()
                .any(|n| n.is_primary() && n.interface_type == interface_type::INTERFACE)
        {
            return Err(invalid(
                "spec.networkInterfaces",
                "must include the primary interface (networkCardIndex 0, deviceIndex 0, interfaceType interface)",
            ));
        }
        if let Some(pg) = &self.placement_group_selector {
            if pg.name.is_some() == pg.id.is_some() {
                return Err(invalid(
                    "spec.placementGroupSelector",
                    "expected exactly one of ['name', 'id']",
                ));
            }
        }
        if let Some(ct) = &self.connection_tracking {
            let ranges = [
                (
                    "tcpEstablishedTimeout",
                    ct.tcp_established_timeout,
                    60,
                    432_000,
                ),
                ("udpStreamTimeout", ct.udp_stream_timeout, 60, 180),
                ("udpTimeout", ct.udp_timeout, 30, 60),
            ];
            if ranges.iter().all(|(_, v, _, _)| v.is_none()) {
                return Err(invalid(
                    "spec.connectionTracking",
                    "expected at least one of ['tcpEstablishedTimeout', 'udpStreamTimeout', 'udpTimeout']",
                ));
            }
            for (f, v, lo, hi) in ranges {
                if let Some(v) = v.filter(|v| !(lo..=hi).contains(v)) {
                    return Err(invalid(
                        format!("spec.connectionTracking.{f}"),
                        format!("must be between {lo} and {hi} seconds, got {v}"),
                    ));
                }
            }
        }
        if let Some(nv) = self
            .cpu_options
            .as_ref()
            .and_then(|c| c.nested_virtualization.as_deref())
        {
            if nv != "enabled" && nv != "disabled" {
                return Err(invalid(
                    "spec.cpuOptions.nestedVirtualization",
                    format!("must be enabled or disabled, got {nv:?}"),
                ));
            }
        }
        if let Some(n) = self.ip_prefix_count.filter(|n| *n < 0) {
            return Err(invalid(
                "spec.ipPrefixCount",
                format!("must not be negative, got {n}"),
            ));
        }
        Ok(())
    }

    /// Derives the allocatable settings (kubelet, AMI family, root volume, instance-store policy) with
    /// Karpenter's operator defaults (`vm_memory_overhead_percent` 0.075, `reserved_enis` 0).
    ///
    /// # Errors
    /// [`NodeClassError`] naming the offending field, e.g. `spec.blockDeviceMappings[0].ebs.volumeSize`
    /// or `spec.kubelet.kubeReserved.memory`.
    pub fn settings(&self) -> Result<NodeClassSettings, NodeClassError> {
        let ami_family = self.resolved_ami_family()?;
        let root_volume_bytes = self.root_volume_bytes(ami_family)?;
        let instance_store_raid0 = match self.instance_store_policy.as_deref() {
            None => false,
            Some("RAID0") => true,
            Some(other) => {
                return Err(invalid(
                    "spec.instanceStorePolicy",
                    format!("unsupported value {other:?} (expected RAID0)"),
                ))
            }
        };
        self.validate_launch_fields()?;
        let settings = NodeClassSettings {
            kubelet: self.kubelet_settings()?,
            ami_family,
            root_volume_bytes,
            instance_store_raid0,
            ip_prefix_count: self.ip_prefix_count,
            ..NodeClassSettings::default()
        };
        settings.validate().map_err(|e| match e {
            AllocatableError::InvalidQuantity { field, key, reason } => {
                invalid(format!("spec.kubelet.{field}.{key}"), reason)
            }
            AllocatableError::InvalidPercentage { field, key, value } => invalid(
                format!("spec.kubelet.{field}.{key}"),
                format!("invalid percentage {value:?}"),
            ),
            AllocatableError::Negative { field, value } => invalid(
                format!("spec.kubelet.{field}"),
                format!("must not be negative, got {value}"),
            ),
        })?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../examples/seed/ec2nodeclass.yaml");

    fn parse(yaml: &str) -> Result<EC2NodeClass, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn walkthrough_manifest_parses_with_every_field() {
        let nc = parse(SEED).unwrap();
        assert_eq!(nc.api_version.as_deref(), Some("karpenter.k8s.aws/v1"));
        assert_eq!(nc.kind.as_deref(), Some("EC2NodeClass"));
        assert_eq!(
            nc.metadata.name.as_deref(),
            Some("karpenter-nodeclass-al2023")
        );
        let s = &nc.spec;
        assert_eq!(s.ami_family.as_deref(), Some("AL2023"));
        assert_eq!(
            s.ami_selector_terms[0].alias.as_deref(),
            Some("al2023@latest")
        );
        assert_eq!(s.role.as_deref(), Some("KarpenterNodeRole-my-cluster"));
        let discovery = BTreeMap::from([(
            "karpenter.sh/discovery".to_string(),
            "my-cluster".to_string(),
        )]);
        assert_eq!(s.subnet_selector_terms[0].tags, discovery);
        assert_eq!(s.security_group_selector_terms[0].tags, discovery);
        let md = s.metadata_options.as_ref().unwrap();
        assert_eq!(md.http_endpoint.as_deref(), Some("enabled"));
        assert_eq!(md.http_tokens.as_deref(), Some("required"));
        assert_eq!(md.http_put_response_hop_limit, Some(2));
        assert_eq!(
            s.tags.get("Name").map(String::as_str),
            Some("karpenter-node")
        );
        let bdm = &s.block_device_mappings[0];
        assert_eq!(bdm.device_name.as_deref(), Some("/dev/xvda"));
        let ebs = bdm.ebs.as_ref().unwrap();
        assert_eq!(ebs.volume_size, Some(QuantityString("30Gi".into())));
        assert_eq!(ebs.volume_type.as_deref(), Some("gp3"));
        assert_eq!(ebs.iops, Some(3000));
        assert_eq!(ebs.encrypted, Some(true));
        assert_eq!(ebs.delete_on_termination, Some(true));

        let settings = s.settings().unwrap();
        assert_eq!(settings.ami_family, AmiFamily::AL2023);
        // /dev/xvda is AL2023's ephemeral device: 30Gi
        assert_eq!(settings.root_volume_bytes, 30 << 30);
        assert_eq!(settings.vm_memory_overhead_percent, 0.075);
        assert_eq!(settings.reserved_enis, 0);
    }

    #[test]
    fn serialization_round_trips_with_karpenter_field_names() {
        let nc = parse(SEED).unwrap();
        let json = serde_json::to_value(&nc).unwrap();
        assert_eq!(
            json["spec"]["metadataOptions"]["httpPutResponseHopLimit"],
            2
        );
        assert_eq!(
            json["spec"]["blockDeviceMappings"][0]["ebs"]["deleteOnTermination"],
            true
        );
        let back: EC2NodeClass = serde_json::from_value(json).unwrap();
        assert_eq!(back, nc);
    }

    #[test]
    fn unknown_fields_are_tolerated_but_wrong_types_are_errors() {
        let ok = "spec:\n  amiFamily: AL2023\n  futureField: [{a: 0}]\n  cpuOptions: {threadsPerCore: 1}\n";
        assert!(parse(ok).is_ok());
        let bad = "spec:\n  networkInterfaces: [{networkCardIndex: 0}]\n";
        assert!(parse(bad).is_err(), "interfaceType is required");
        let bad = "spec:\n  metadataOptions:\n    httpPutResponseHopLimit: two\n";
        assert!(parse(bad).is_err());
        let bad = "spec:\n  blockDeviceMappings:\n  - ebs: {volumeSize: [1]}\n";
        assert!(parse(bad).is_err());
        // numbers are accepted as quantities
        let num = "spec:\n  amiFamily: AL2\n  blockDeviceMappings:\n  - deviceName: /dev/xvda\n    ebs: {volumeSize: 1073741824}\n";
        assert_eq!(
            parse(num)
                .unwrap()
                .spec
                .settings()
                .unwrap()
                .root_volume_bytes,
            1 << 30
        );
    }

    #[test]
    fn root_volume_rules_follow_karpenter() {
        let spec = |yaml: &str| parse(yaml).unwrap().spec;
        // rootVolume wins over the device name
        let s = spec("spec:\n  amiFamily: AL2023\n  blockDeviceMappings:\n  - deviceName: /dev/xvda\n    ebs: {volumeSize: 30Gi}\n  - deviceName: /dev/xvdc\n    rootVolume: true\n    ebs: {volumeSize: 100Gi}\n");
        assert_eq!(s.settings().unwrap().root_volume_bytes, 100 << 30);
        // Bottlerocket: /dev/xvdb, default 20Gi when absent
        let s = spec("spec:\n  amiFamily: Bottlerocket\n  blockDeviceMappings:\n  - deviceName: /dev/xvda\n    ebs: {volumeSize: 4Gi}\n");
        assert_eq!(s.settings().unwrap().root_volume_bytes, 20 << 30);
        let s = spec("spec:\n  amiFamily: Bottlerocket\n  blockDeviceMappings:\n  - deviceName: /dev/xvdb\n    ebs: {volumeSize: 80Gi}\n");
        assert_eq!(s.settings().unwrap().root_volume_bytes, 80 << 30);
        // alias infers the family; no mappings: 20Gi
        let s = spec("spec:\n  amiSelectorTerms:\n  - alias: bottlerocket@latest\n");
        let st = s.settings().unwrap();
        assert_eq!(
            (st.ami_family, st.root_volume_bytes),
            (AmiFamily::Bottlerocket, 20 << 30)
        );
        // Custom: the last mapping
        let s = spec("spec:\n  amiFamily: Custom\n  amiSelectorTerms: [{id: ami-1}]\n  blockDeviceMappings:\n  - deviceName: /dev/sda\n    ebs: {volumeSize: 8Gi}\n  - deviceName: /dev/sdb\n    ebs: {volumeSize: 50Gi}\n");
        assert_eq!(s.settings().unwrap().root_volume_bytes, 50 << 30);
    }

    #[test]
    fn errors_name_the_field() {
        let spec = |yaml: &str| parse(yaml).unwrap().spec;
        let e = spec("spec:\n  amiFamily: AL2023\n  blockDeviceMappings:\n  - deviceName: /dev/xvda\n    ebs: {volumeSize: big}\n")
            .settings()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.blockDeviceMappings[0].ebs.volumeSize:"),
            "{e}"
        );
        let e = spec("spec:\n  amiFamily: AL2023\n  kubelet:\n    kubeReserved: {memory: lots}\n")
            .settings()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.kubelet.kubeReserved.memory:"),
            "{e}"
        );
        let e = spec(
            "spec:\n  amiFamily: AL2023\n  kubelet:\n    evictionHard: {memory.available: abc%}\n",
        )
        .settings()
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("spec.kubelet.evictionHard.memory.available:"),
            "{e}"
        );
        let e = spec("spec:\n  amiFamily: Ubuntu\n").settings().unwrap_err();
        assert!(e.to_string().starts_with("spec.amiFamily:"), "{e}");
        let e = spec("spec:\n  amiSelectorTerms:\n  - alias: rhel@latest\n")
            .settings()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("spec.amiSelectorTerms[0].alias:"),
            "{e}"
        );
        assert_eq!(
            spec("spec: {}\n").settings().unwrap_err(),
            NodeClassError::MissingAmiFamily
        );
        let e = spec("spec:\n  amiFamily: AL2023\n  kubelet: {maxPods: 'max_pods * 2'}\n")
            .settings()
            .unwrap_err();
        assert!(e.to_string().starts_with("spec.kubelet.maxPods:"), "{e}");
        let e = spec("spec:\n  amiFamily: AL2023\n  instanceStorePolicy: RAID5\n")
            .settings()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("spec.instanceStorePolicy:"),
            "{e}"
        );
    }

    #[test]
    fn launch_fields_are_checked_like_the_crd_checks_them() {
        let err = |extra: &str| {
            parse(&format!("spec:\n  amiFamily: AL2023\n{extra}"))
                .unwrap()
                .spec
                .settings()
                .unwrap_err()
                .to_string()
        };
        let ok = "spec:\n  amiFamily: AL2023\n  ipPrefixCount: 1\n  networkInterfaces:\n  - {interfaceType: interface}\n  - {networkCardIndex: 1, interfaceType: efa-only}\n  placementGroupSelector: {name: pg}\n  connectionTracking: {udpTimeout: 30}\n  cpuOptions: {nestedVirtualization: enabled}\n";
        let settings = parse(ok).unwrap().spec.settings().unwrap();
        assert_eq!(settings.ip_prefix_count, Some(1));
        for (extra, field) in [
            ("  networkInterfaces: [{interfaceType: efa}]\n", "spec.networkInterfaces[0].interfaceType:"),
            ("  networkInterfaces: [{interfaceType: efa-only}]\n", "spec.networkInterfaces:"),
            ("  networkInterfaces: [{interfaceType: interface}, {deviceIndex: 0, interfaceType: interface}]\n", "spec.networkInterfaces:"),
            ("  networkInterfaces: [{interfaceType: interface, deviceIndex: -1}]\n", "spec.networkInterfaces[0].deviceIndex:"),
            ("  placementGroupSelector: {name: a, id: pg-1}\n", "spec.placementGroupSelector:"),
            ("  connectionTracking: {}\n", "spec.connectionTracking:"),
            ("  connectionTracking: {udpTimeout: 5}\n", "spec.connectionTracking.udpTimeout:"),
            ("  cpuOptions: {nestedVirtualization: on}\n", "spec.cpuOptions.nestedVirtualization:"),
            ("  ipPrefixCount: -1\n", "spec.ipPrefixCount:"),
        ] {
            let e = err(extra);
            assert!(e.starts_with(field), "{extra}: {e}");
        }
    }

    #[test]
    fn kubelet_block_becomes_settings() {
        let s = parse("spec:\n  amiFamily: AL2\n  instanceStorePolicy: RAID0\n  kubelet:\n    maxPods: 58\n    podsPerCore: 10\n    kubeReserved: {cpu: 250m}\n    systemReserved: {memory: 300Mi}\n    evictionHard: {memory.available: 5%}\n    clusterDNS: [10.0.0.10]\n")
            .unwrap()
            .spec
            .settings()
            .unwrap();
        assert_eq!(s.kubelet.max_pods, Some(58));
        assert_eq!(s.kubelet.pods_per_core, Some(10));
        assert_eq!(s.kubelet.kube_reserved["cpu"], "250m");
        assert!(s.instance_store_raid0);
        assert_eq!(s.ami_family, AmiFamily::AL2);
    }
}
