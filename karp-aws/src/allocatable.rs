//! Karpenter's AWS capacity and overhead formula, reproduced exactly
//! (aws/karpenter-provider-aws `pkg/providers/instancetype/types.go`: `memory`, `ENILimitedPods`, `pods`,
//! `kubeReservedResources`, `systemReservedResources`, `evictionThreshold`, `ephemeralStorage`, and the
//! AMI-family feature flags in `pkg/providers/amifamily`).
//!
//! Summary (defaults: AL2023, no kubelet overrides, 20Gi root volume, 7.5 % VM overhead, 0 reserved ENIs):
//!
//! - **cpu** = vCPUs × 1000m.
//! - **memory** = (MiB − 64 MiB if the first listed architecture is arm64) − ceil(bytes × 7.5 % / MiB) MiB.
//! - **pods** = kubelet `maxPods`, else `(ENIs on the default network card − reserved ENIs) × (IPv4 per
//!   ENI − 1) + 2` (0 when no ENI is left) for families with ENI-limited density, else 110; then capped at
//!   `podsPerCore × vCPUs` when `podsPerCore > 0` and the family honours it (not Bottlerocket).
//! - **ephemeral-storage** = the root volume size (or the instance-store total in GB under `RAID0`).
//! - **kube-reserved**: cpu 6 % of the first core, 1 % of the second, 0.5 % of cores 3–4, 0.25 % of the
//!   rest (each band truncated to whole millicores); memory `11 × pods + 255` MiB where pods is the
//!   ENI-limited count (reserved ENIs 0) for AL2/AL2023/Custom, the final pods capacity otherwise;
//!   ephemeral-storage 1Gi. Every `kubeReserved` entry replaces the computed value.
//! - **system-reserved**: exactly the `systemReserved` entries.
//! - **eviction threshold**: memory 100Mi, ephemeral-storage ceil(10 % of the volume); `evictionHard`
//!   `memory.available` / `nodefs.available` replace them (a percentage is ceil(capacity / 100 × p),
//!   100 % counts as 0). `evictionSoft` does not change allocatable (Karpenter HEAD).
//!
//! Overhead = kube-reserved + system-reserved + eviction threshold, per resource.

use std::collections::BTreeMap;

use crate::quantity::{self, QuantityError};

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Integer resource amounts: CPU in millicores, memory and ephemeral storage in bytes, pods, and
/// extended resources (e.g. `nvidia.com/gpu`) as counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAmounts {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Pod count.
    pub pods: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: i64,
    /// Other resources by name, as integer counts (zero amounts are left out).
    pub extended: BTreeMap<String, i64>,
}

impl ResourceAmounts {
    /// The core's resource vector (zero extended resources dropped).
    #[must_use]
    pub fn to_core(&self) -> karp_core::resources::Resources {
        karp_core::resources::Resources {
            cpu: self.cpu_millis,
            memory: self.memory_bytes,
            ephemeral_storage: self.ephemeral_storage_bytes,
            pods: self.pods,
            extended: self
                .extended
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// The kubelet settings that change capacity or overhead (EC2NodeClass `spec.kubelet`).
///
/// The maps hold Kubernetes quantity strings exactly as written in the manifest; they are parsed by
/// [`compute`] (and validated up front by `EC2NodeClassSpec::settings`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeletSettings {
    /// `maxPods`: replaces the ENI-limited pod count.
    pub max_pods: Option<i64>,
    /// `podsPerCore`: caps pods at `podsPerCore × vCPUs` when > 0.
    pub pods_per_core: Option<i64>,
    /// `kubeReserved`: resource name → quantity; each entry replaces Karpenter's default.
    pub kube_reserved: BTreeMap<String, String>,
    /// `systemReserved`: resource name → quantity.
    pub system_reserved: BTreeMap<String, String>,
    /// `evictionHard`: signal → quantity or percentage (`memory.available`, `nodefs.available` matter).
    pub eviction_hard: BTreeMap<String, String>,
    /// `evictionSoft`: kept for completeness; Karpenter does not subtract it from allocatable.
    pub eviction_soft: BTreeMap<String, String>,
}

/// EC2NodeClass AMI families, with the feature flags that change the allocatable formula.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AmiFamily {
    /// Amazon Linux 2.
    AL2,
    /// Amazon Linux 2023 (Karpenter's default via `al2023@latest`).
    #[default]
    AL2023,
    /// Bottlerocket.
    Bottlerocket,
    /// A custom AMI (Karpenter applies the default family's flags).
    Custom,
    /// Windows Server 2019.
    Windows2019,
    /// Windows Server 2022.
    Windows2022,
    /// Windows Server 2025.
    Windows2025,
}

impl AmiFamily {
    /// Parses the `spec.amiFamily` spelling (`AL2`, `AL2023`, `Bottlerocket`, `Custom`, `Windows2019`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "AL2" => Self::AL2,
            "AL2023" => Self::AL2023,
            "Bottlerocket" => Self::Bottlerocket,
            "Custom" => Self::Custom,
            "Windows2019" => Self::Windows2019,
            "Windows2022" => Self::Windows2022,
            "Windows2025" => Self::Windows2025,
            _ => return None,
        })
    }

    /// The family of an `amiSelectorTerms[].alias` family part (`al2`, `al2023`, `bottlerocket`, `windows2022`, ...).
    pub fn from_alias_family(family: &str) -> Option<Self> {
        Some(match family.to_ascii_lowercase().as_str() {
            "al2" => Self::AL2,
            "al2023" => Self::AL2023,
            "bottlerocket" => Self::Bottlerocket,
            "windows2019" => Self::Windows2019,
            "windows2022" => Self::Windows2022,
            "windows2025" => Self::Windows2025,
            _ => return None,
        })
    }

    /// The `spec.amiFamily` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::AL2 => "AL2",
            Self::AL2023 => "AL2023",
            Self::Bottlerocket => "Bottlerocket",
            Self::Custom => "Custom",
            Self::Windows2019 => "Windows2019",
            Self::Windows2022 => "Windows2022",
            Self::Windows2025 => "Windows2025",
        }
    }

    /// Whether this is a Windows family.
    pub fn is_windows(self) -> bool {
        matches!(
            self,
            Self::Windows2019 | Self::Windows2022 | Self::Windows2025
        )
    }

    /// The Windows build (`node.kubernetes.io/windows-build`), for Windows families.
    pub fn windows_build(self) -> Option<&'static str> {
        match self {
            Self::Windows2019 => Some("10.0.17763"),
            Self::Windows2022 => Some("10.0.20348"),
            Self::Windows2025 => Some("10.0.26100"),
            _ => None,
        }
    }

    /// Kube-reserved memory uses the ENI-limited pod count, whatever maxPods says (AL2, AL2023, Custom).
    pub fn uses_eni_limited_memory_overhead(self) -> bool {
        !(self == Self::Bottlerocket || self.is_windows())
    }

    /// `podsPerCore` is honoured (not on Bottlerocket).
    pub fn pods_per_core_enabled(self) -> bool {
        self != Self::Bottlerocket
    }

    /// Pods default to the ENI-limited count (else 110; Windows).
    pub fn supports_eni_limited_pod_density(self) -> bool {
        !self.is_windows()
    }

    /// The device that holds ephemeral storage (`/dev/xvda`; `/dev/xvdb` on Bottlerocket; `/dev/sda1` on Windows).
    pub fn ephemeral_block_device(self) -> &'static str {
        match self {
            Self::Bottlerocket => "/dev/xvdb",
            Self::Windows2019 | Self::Windows2022 | Self::Windows2025 => "/dev/sda1",
            _ => "/dev/xvda",
        }
    }

    /// The default size of that device in bytes (20Gi; 50Gi on Windows).
    pub fn default_ephemeral_volume_bytes(self) -> i64 {
        if self.is_windows() {
            50 * GIB
        } else {
            20 * GIB
        }
    }
}

/// Everything the allocatable formula takes besides the instance type's own facts: the EC2NodeClass's
/// kubelet block, AMI family and root volume, plus two operator options.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClassSettings {
    /// Kubelet overrides.
    pub kubelet: KubeletSettings,
    /// The AMI family (feature flags, OS label).
    pub ami_family: AmiFamily,
    /// Ephemeral-storage capacity: the root volume size in bytes (default 20Gi).
    pub root_volume_bytes: i64,
    /// `instanceStorePolicy: RAID0`: types with instance storage use its total size instead.
    pub instance_store_raid0: bool,
    /// Karpenter's `--vm-memory-overhead-percent` (default 0.075).
    pub vm_memory_overhead_percent: f64,
    /// Karpenter's `--reserved-enis` (default 0).
    pub reserved_enis: i64,
    /// `spec.ipPrefixCount`: above 0, pods are counted with prefix delegation (16 addresses per slot).
    pub ip_prefix_count: Option<i64>,
}

impl Default for NodeClassSettings {
    fn default() -> Self {
        Self {
            kubelet: KubeletSettings::default(),
            ami_family: AmiFamily::AL2023,
            root_volume_bytes: 20 * GIB,
            instance_store_raid0: false,
            vm_memory_overhead_percent: 0.075,
            reserved_enis: 0,
            ip_prefix_count: None,
        }
    }
}

impl NodeClassSettings {
    /// Sets the kubelet settings.
    #[must_use]
    pub fn with_kubelet(mut self, kubelet: KubeletSettings) -> Self {
        self.kubelet = kubelet;
        self
    }

    /// Sets the AMI family.
    #[must_use]
    pub fn with_ami_family(mut self, family: AmiFamily) -> Self {
        self.ami_family = family;
        self
    }

    /// Sets the root volume size in bytes.
    #[must_use]
    pub fn with_root_volume_bytes(mut self, bytes: i64) -> Self {
        self.root_volume_bytes = bytes;
        self
    }

    /// Sets the VM memory overhead fraction (0.075 = 7.5 %).
    #[must_use]
    pub fn with_vm_memory_overhead_percent(mut self, fraction: f64) -> Self {
        self.vm_memory_overhead_percent = fraction;
        self
    }

    /// Sets the number of reserved ENIs.
    #[must_use]
    pub fn with_reserved_enis(mut self, enis: i64) -> Self {
        self.reserved_enis = enis;
        self
    }

    /// Sets `spec.ipPrefixCount`.
    #[must_use]
    pub fn with_ip_prefix_count(mut self, count: Option<i64>) -> Self {
        self.ip_prefix_count = count;
        self
    }

    /// Checks every quantity and percentage in the kubelet settings, so that [`compute`] cannot fail.
    ///
    /// # Errors
    /// [`AllocatableError`] naming the kubelet field and key.
    pub fn validate(&self) -> Result<(), AllocatableError> {
        let facts = InstanceFacts {
            vcpus: 1,
            memory_mib: 1024,
            first_architecture_arm64: false,
            default_card_enis: 1,
            ipv4_per_eni: 2,
            local_storage_gb: None,
            extended: BTreeMap::new(),
        };
        compute(&facts, self).map(|_| ())
    }
}

/// The facts about one instance type that the formula reads (from DescribeInstanceTypes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFacts {
    /// `VCpuInfo.DefaultVCpus`.
    pub vcpus: i64,
    /// `MemoryInfo.SizeInMiB`.
    pub memory_mib: i64,
    /// `ProcessorInfo.SupportedArchitectures[0] == "arm64"` (Graviton: 64 MiB CMA reserved).
    pub first_architecture_arm64: bool,
    /// `MaximumNetworkInterfaces` of the default network card.
    pub default_card_enis: i64,
    /// `Ipv4AddressesPerInterface`.
    pub ipv4_per_eni: i64,
    /// `InstanceStorageInfo.TotalSizeInGB` (for `RAID0`).
    pub local_storage_gb: Option<i64>,
    /// Extended resources in capacity (GPUs, Neuron, EFA, pod ENIs), zero entries omitted.
    pub extended: BTreeMap<String, i64>,
}

/// A kubelet setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocatableError {
    /// A quantity did not parse (field e.g. `kubeReserved`, key e.g. `memory`).
    #[error("kubelet {field}[{key:?}]: {reason}")]
    InvalidQuantity {
        /// The kubelet field.
        field: &'static str,
        /// The map key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A percentage did not parse.
    #[error("kubelet {field}[{key:?}]: invalid percentage {value:?}")]
    InvalidPercentage {
        /// The kubelet field.
        field: &'static str,
        /// The map key.
        key: String,
        /// The value.
        value: String,
    },
    /// maxPods or podsPerCore is negative.
    #[error("kubelet {field}: must not be negative, got {value}")]
    Negative {
        /// The kubelet field.
        field: &'static str,
        /// The value.
        value: i64,
    },
}

fn qerr(field: &'static str, key: &str, e: QuantityError) -> AllocatableError {
    AllocatableError::InvalidQuantity {
        field,
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// `ENILimitedPods`: `(ENIs − reserved) × (IPv4 per ENI − 1) + 2`, or 0 when no ENI is usable.
pub fn eni_limited_pods(default_card_enis: i64, ipv4_per_eni: i64, reserved_enis: i64) -> i64 {
    let usable = (default_card_enis - reserved_enis).max(0);
    if usable == 0 {
        return 0;
    }
    usable * (ipv4_per_eni - 1) + 2
}

/// Addresses in one IPv4 prefix (a /28) delegated to an ENI slot.
pub const ADDRESSES_PER_PREFIX: i64 = 16;

/// Pod density with prefix delegation (the EKS max-pods calculator's formula):
/// `(ENIs − reserved) × (IPv4 per ENI − 1) × 16 + 2`, capped at 110 below 30 vCPUs and 250 from 30
/// vCPUs on (more pods than that overload the kubelet); 0 when no ENI is usable.
pub fn prefix_delegated_pods(
    default_card_enis: i64,
    ipv4_per_eni: i64,
    reserved_enis: i64,
    vcpus: i64,
) -> i64 {
    let usable = (default_card_enis - reserved_enis).max(0);
    if usable == 0 {
        return 0;
    }
    let pods = usable * (ipv4_per_eni - 1) * ADDRESSES_PER_PREFIX + 2;
    pods.min(if vcpus < 30 { 110 } else { 250 })
}

/// `memory()`: capacity memory in bytes after the Graviton CMA and VM overhead deductions.
pub fn memory_capacity_bytes(facts: &InstanceFacts, vm_memory_overhead_percent: f64) -> i64 {
    let mut mib = facts.memory_mib;
    if facts.first_architecture_arm64 {
        mib -= 64;
    }
    let bytes = mib * MIB;
    // Same operation order as Go: float64(v) * pct / 1024 / 1024, then ceil, in whole MiB.
    let overhead_mib = (bytes as f64 * vm_memory_overhead_percent / 1024.0 / 1024.0).ceil() as i64;
    bytes - overhead_mib * MIB
}

/// `pods()`: the pods capacity.
pub fn pods_capacity(facts: &InstanceFacts, settings: &NodeClassSettings) -> i64 {
    let family = settings.ami_family;
    let mut count = match settings.kubelet.max_pods {
        Some(n) => n,
        None if family.supports_eni_limited_pod_density()
            && settings.ip_prefix_count.is_some_and(|n| n > 0) =>
        {
            prefix_delegated_pods(
                facts.default_card_enis,
                facts.ipv4_per_eni,
                settings.reserved_enis,
                facts.vcpus,
            )
        }
        None if family.supports_eni_limited_pod_density() => eni_limited_pods(
            facts.default_card_enis,
            facts.ipv4_per_eni,
            settings.reserved_enis,
        ),
        None => 110,
    };
    if let Some(ppc) = settings.kubelet.pods_per_core {
        if ppc > 0 && family.pods_per_core_enabled() {
            count = count.min(ppc.saturating_mul(facts.vcpus));
        }
    }
    count
}

/// `ephemeralStorage()`: the ephemeral-storage capacity in bytes.
pub fn ephemeral_storage_bytes(facts: &InstanceFacts, settings: &NodeClassSettings) -> i64 {
    if settings.instance_store_raid0 {
        if let Some(gb) = facts.local_storage_gb {
            return gb.saturating_mul(1_000_000_000);
        }
    }
    settings.root_volume_bytes
}

/// Kube-reserved CPU in millicores (Bottlerocket's bands, each truncated like Go's `int64(r*pct)`).
pub fn kube_reserved_cpu_millis(cpu_millis: i64) -> i64 {
    let mut total = 0;
    for (start, end, pct) in [
        (0i64, 1000i64, 0.06f64),
        (1000, 2000, 0.01),
        (2000, 4000, 0.005),
        (4000, 1 << 31, 0.0025),
    ] {
        if cpu_millis >= start {
            let r = if cpu_millis < end {
                cpu_millis - start
            } else {
                end - start
            };
            total += (r as f64 * pct) as i64;
        }
    }
    total
}

fn add_resource(amounts: &mut ResourceAmounts, name: &str, value: i64) {
    match name {
        "cpu" => amounts.cpu_millis += value,
        "memory" => amounts.memory_bytes += value,
        "pods" => amounts.pods += value,
        "ephemeral-storage" => amounts.ephemeral_storage_bytes += value,
        other => {
            let entry = amounts.extended.entry(other.to_string()).or_insert(0);
            *entry += value;
            if *entry == 0 {
                amounts.extended.remove(other);
            }
        }
    }
}

fn parse_resource(field: &'static str, name: &str, value: &str) -> Result<i64, AllocatableError> {
    if name == "cpu" {
        quantity::parse_milli(value).map_err(|e| qerr(field, name, e))
    } else {
        quantity::parse_value(value).map_err(|e| qerr(field, name, e))
    }
}

/// `computeEvictionSignal`: a quantity, or a percentage of `capacity` (100 % means 0).
pub(crate) fn eviction_signal(
    field: &'static str,
    key: &str,
    value: &str,
    capacity: i64,
) -> Result<i64, AllocatableError> {
    if let Some(p) = value.trim().strip_suffix('%') {
        let mut p: f64 = p
            .trim()
            .parse()
            .map_err(|_| AllocatableError::InvalidPercentage {
                field,
                key: key.to_string(),
                value: value.to_string(),
            })?;
        if !p.is_finite() {
            return Err(AllocatableError::InvalidPercentage {
                field,
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        if p == 100.0 {
            p = 0.0;
        }
        return Ok((capacity as f64 / 100.0 * p).ceil() as i64);
    }
    quantity::parse_value(value).map_err(|e| qerr(field, key, e))
}

/// Computes `(capacity, overhead)` for one instance type.
///
/// Capacity holds cpu, memory, pods, ephemeral-storage and the facts' extended resources (plus
/// `vpc.amazonaws.com/PrivateIPv4Address` on Windows). Overhead is kube-reserved + system-reserved +
/// eviction threshold.
///
/// # Errors
/// [`AllocatableError`] when a kubelet quantity or percentage does not parse or maxPods/podsPerCore is negative.
pub fn compute(
    facts: &InstanceFacts,
    settings: &NodeClassSettings,
) -> Result<(ResourceAmounts, ResourceAmounts), AllocatableError> {
    let kubelet = &settings.kubelet;
    for (field, value) in [
        ("maxPods", kubelet.max_pods),
        ("podsPerCore", kubelet.pods_per_core),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            return Err(AllocatableError::Negative { field, value: v });
        }
    }
    let family = settings.ami_family;
    let memory = memory_capacity_bytes(facts, settings.vm_memory_overhead_percent);
    let storage = ephemeral_storage_bytes(facts, settings);
    let pods = pods_capacity(facts, settings);
    let mut extended = facts.extended.clone();
    if family.is_windows() && facts.ipv4_per_eni > 1 {
        extended.insert(
            "vpc.amazonaws.com/PrivateIPv4Address".to_string(),
            facts.ipv4_per_eni - 1,
        );
    }
    let capacity = ResourceAmounts {
        cpu_millis: facts.vcpus * 1000,
        memory_bytes: memory,
        pods,
        ephemeral_storage_bytes: storage,
        extended,
    };

    // kube-reserved
    let reserved_pods = if family.uses_eni_limited_memory_overhead() {
        eni_limited_pods(facts.default_card_enis, facts.ipv4_per_eni, 0)
    } else {
        pods
    };
    let mut kube: BTreeMap<String, i64> = BTreeMap::new();
    kube.insert("memory".into(), (11 * reserved_pods + 255) * MIB);
    kube.insert("ephemeral-storage".into(), GIB);
    kube.insert("cpu".into(), kube_reserved_cpu_millis(capacity.cpu_millis));
    for (k, v) in &kubelet.kube_reserved {
        kube.insert(k.clone(), parse_resource("kubeReserved", k, v)?);
    }

    // system-reserved
    let mut system: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in &kubelet.system_reserved {
        system.insert(k.clone(), parse_resource("systemReserved", k, v)?);
    }

    // eviction threshold (evictionHard only; evictionSoft is validated but not subtracted)
    let mut eviction: BTreeMap<String, i64> = BTreeMap::new();
    eviction.insert("memory".into(), 100 * MIB);
    eviction.insert(
        "ephemeral-storage".into(),
        (storage as f64 / 100.0 * 10.0).ceil() as i64,
    );
    if let Some(v) = kubelet.eviction_hard.get("memory.available") {
        eviction.insert(
            "memory".into(),
            eviction_signal("evictionHard", "memory.available", v, memory)?,
        );
    }
    if let Some(v) = kubelet.eviction_hard.get("nodefs.available") {
        eviction.insert(
            "ephemeral-storage".into(),
            eviction_signal("evictionHard", "nodefs.available", v, storage)?,
        );
    }
    for (k, v) in &kubelet.eviction_soft {
        eviction_signal("evictionSoft", k, v, 0)?;
    }

    let mut overhead = ResourceAmounts::default();
    for map in [&kube, &system, &eviction] {
        for (k, v) in map {
            add_resource(&mut overhead, k, *v);
        }
    }
    Ok((capacity, overhead))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m5_large() -> InstanceFacts {
        InstanceFacts {
            vcpus: 2,
            memory_mib: 8192,
            first_architecture_arm64: false,
            default_card_enis: 3,
            ipv4_per_eni: 10,
            local_storage_gb: None,
            extended: BTreeMap::new(),
        }
    }

    #[test]
    fn kube_reserved_cpu_follows_the_bands() {
        // 1 core: 6% of 1000 = 60
        assert_eq!(kube_reserved_cpu_millis(1000), 60);
        // 2 cores: 60 + 10
        assert_eq!(kube_reserved_cpu_millis(2000), 70);
        // 4 cores: 60 + 10 + 10
        assert_eq!(kube_reserved_cpu_millis(4000), 80);
        // 96 cores: 80 + 0.25% of 92000 = 80 + 230
        assert_eq!(kube_reserved_cpu_millis(96_000), 310);
        // 500m: 6% of 500 = 30
        assert_eq!(kube_reserved_cpu_millis(500), 30);
    }

    #[test]
    fn ip_prefix_count_counts_pods_with_prefix_delegation() {
        // m5.large: 3 ENIs × 9 slots × 16 + 2 = 434, capped at 110 (2 vCPUs).
        let facts = m5_large();
        let pd = NodeClassSettings::default().with_ip_prefix_count(Some(1));
        assert_eq!(pods_capacity(&facts, &pd), 110);
        // 30 vCPUs and more: capped at 250; small ENI counts stay below the cap.
        assert_eq!(prefix_delegated_pods(8, 30, 0, 96), 250);
        assert_eq!(prefix_delegated_pods(2, 2, 0, 2), 2 * 16 + 2);
        assert_eq!(prefix_delegated_pods(3, 10, 3, 2), 0);
        // 0 prefixes is not prefix delegation; maxPods still wins.
        let zero = NodeClassSettings::default().with_ip_prefix_count(Some(0));
        assert_eq!(pods_capacity(&facts, &zero), 29);
        let max = pd.with_kubelet(KubeletSettings {
            max_pods: Some(58),
            ..KubeletSettings::default()
        });
        assert_eq!(pods_capacity(&facts, &max), 58);
    }

    #[test]
    fn eni_limited_pods_handles_reserved_enis() {
        assert_eq!(eni_limited_pods(3, 10, 0), 29);
        assert_eq!(eni_limited_pods(3, 10, 1), 20);
        assert_eq!(eni_limited_pods(3, 10, 3), 0);
        assert_eq!(eni_limited_pods(3, 10, 5), 0);
    }

    #[test]
    fn m5_large_defaults_match_karpenter() {
        let (cap, ovh) = compute(&m5_large(), &NodeClassSettings::default()).unwrap();
        // memory: 8192Mi - ceil(8192 * 0.075 = 614.4) = 8192 - 615 = 7577Mi
        assert_eq!(cap.memory_bytes, 7577 * MIB);
        assert_eq!(cap.pods, 29);
        assert_eq!(cap.cpu_millis, 2000);
        assert_eq!(cap.ephemeral_storage_bytes, 20 * GIB);
        // overhead cpu 70m; memory (11*29+255 = 574Mi) + 100Mi eviction = 674Mi
        assert_eq!(ovh.cpu_millis, 70);
        assert_eq!(ovh.memory_bytes, 674 * MIB);
        // ephemeral 1Gi + 10% of 20Gi (2Gi) = 3Gi
        assert_eq!(ovh.ephemeral_storage_bytes, 3 * GIB);
        assert_eq!(cap.memory_bytes - ovh.memory_bytes, 6903 * MIB);
    }

    #[test]
    fn graviton_loses_64_mib_before_the_vm_overhead() {
        let mut f = m5_large();
        f.first_architecture_arm64 = true;
        // (8192 - 64) = 8128Mi; 8128 * 0.075 = 609.6 -> 610; 8128 - 610 = 7518Mi
        assert_eq!(memory_capacity_bytes(&f, 0.075), 7518 * MIB);
    }

    #[test]
    fn max_pods_overrides_capacity_but_not_al2023_kube_reserved_memory() {
        let s = NodeClassSettings::default().with_kubelet(KubeletSettings {
            max_pods: Some(110),
            ..Default::default()
        });
        let (cap, ovh) = compute(&m5_large(), &s).unwrap();
        assert_eq!(cap.pods, 110);
        // AL2023 uses the ENI-limited count (29) for kube-reserved memory: 574Mi + 100Mi
        assert_eq!(ovh.memory_bytes, 674 * MIB);
        // Bottlerocket uses the pods capacity: 11*110+255 = 1465Mi + 100Mi
        let (_, ovh) = compute(
            &m5_large(),
            &s.clone().with_ami_family(AmiFamily::Bottlerocket),
        )
        .unwrap();
        assert_eq!(ovh.memory_bytes, 1565 * MIB);
    }

    #[test]
    fn pods_per_core_caps_pods_except_on_bottlerocket() {
        let s = NodeClassSettings::default().with_kubelet(KubeletSettings {
            pods_per_core: Some(4),
            ..Default::default()
        });
        assert_eq!(pods_capacity(&m5_large(), &s), 8);
        let br = s.clone().with_ami_family(AmiFamily::Bottlerocket);
        assert_eq!(pods_capacity(&m5_large(), &br), 29);
        // podsPerCore larger than the ENI limit changes nothing
        let s = NodeClassSettings::default().with_kubelet(KubeletSettings {
            pods_per_core: Some(50),
            ..Default::default()
        });
        assert_eq!(pods_capacity(&m5_large(), &s), 29);
    }

    #[test]
    fn windows_defaults_to_110_pods_and_private_ipv4() {
        let s = NodeClassSettings::default().with_ami_family(AmiFamily::Windows2022);
        let (cap, ovh) = compute(&m5_large(), &s).unwrap();
        assert_eq!(cap.pods, 110);
        assert_eq!(
            cap.extended.get("vpc.amazonaws.com/PrivateIPv4Address"),
            Some(&9)
        );
        // Windows kube-reserved memory uses pods capacity: 11*110+255 = 1465Mi, + 100Mi
        assert_eq!(ovh.memory_bytes, 1565 * MIB);
    }

    #[test]
    fn kube_and_system_reserved_and_eviction_hard_override() {
        let mut kubelet = KubeletSettings::default();
        kubelet.kube_reserved.insert("cpu".into(), "200m".into());
        kubelet.kube_reserved.insert("memory".into(), "1Gi".into());
        kubelet.system_reserved.insert("cpu".into(), "100m".into());
        kubelet
            .system_reserved
            .insert("memory".into(), "200Mi".into());
        kubelet
            .eviction_hard
            .insert("memory.available".into(), "5%".into());
        kubelet
            .eviction_hard
            .insert("nodefs.available".into(), "15%".into());
        kubelet
            .eviction_soft
            .insert("memory.available".into(), "50%".into());
        let s = NodeClassSettings::default().with_kubelet(kubelet);
        let (cap, ovh) = compute(&m5_large(), &s).unwrap();
        assert_eq!(ovh.cpu_millis, 300);
        // 5% of 7577Mi = 7945060352 / 100 * 5 = 397253017.6 -> 397253018 bytes
        let evict = (cap.memory_bytes as f64 / 100.0 * 5.0).ceil() as i64;
        assert_eq!(evict, 397_253_018);
        assert_eq!(ovh.memory_bytes, GIB + 200 * MIB + evict);
        // ephemeral: kube 1Gi + 15% of 20Gi = 3221225472 bytes
        assert_eq!(ovh.ephemeral_storage_bytes, GIB + 3_221_225_472);
    }

    #[test]
    fn eviction_hard_of_100_percent_disables_the_threshold() {
        let mut kubelet = KubeletSettings::default();
        kubelet
            .eviction_hard
            .insert("memory.available".into(), "100%".into());
        let (_, ovh) = compute(
            &m5_large(),
            &NodeClassSettings::default().with_kubelet(kubelet),
        )
        .unwrap();
        assert_eq!(ovh.memory_bytes, 574 * MIB);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let mut kubelet = KubeletSettings::default();
        kubelet.kube_reserved.insert("memory".into(), "lots".into());
        let e = NodeClassSettings::default()
            .with_kubelet(kubelet)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("kubeReserved[\"memory\"]"), "{e}");
        let mut kubelet = KubeletSettings::default();
        kubelet
            .eviction_hard
            .insert("memory.available".into(), "x%".into());
        let e = NodeClassSettings::default()
            .with_kubelet(kubelet)
            .validate()
            .unwrap_err();
        assert!(matches!(e, AllocatableError::InvalidPercentage { .. }));
        let kubelet = KubeletSettings {
            max_pods: Some(-1),
            ..Default::default()
        };
        assert!(NodeClassSettings::default()
            .with_kubelet(kubelet)
            .validate()
            .is_err());
    }

    #[test]
    fn raid0_uses_instance_storage_in_decimal_gigabytes() {
        let mut f = m5_large();
        f.local_storage_gb = Some(75);
        let s = NodeClassSettings {
            instance_store_raid0: true,
            ..Default::default()
        };
        assert_eq!(ephemeral_storage_bytes(&f, &s), 75_000_000_000);
        f.local_storage_gb = None;
        assert_eq!(ephemeral_storage_bytes(&f, &s), 20 * GIB);
    }
}
