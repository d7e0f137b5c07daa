//! The built-in us-east-1 instance-type catalog, embedded from `data/*.csv` (see `data/README.md`).
//!
//! Labels follow Karpenter's AWS provider `computeRequirements` (aws/karpenter-provider-aws
//! `pkg/providers/instancetype/types.go`): every single-valued well-known label the type offers. Zone
//! and capacity type come from the offerings, not from labels.

use std::collections::BTreeMap;

use crate::allocatable::{
    self, AllocatableError, AmiFamily, InstanceFacts, NodeClassSettings, ResourceAmounts,
};

const TYPES_CSV: &str = include_str!("../data/us-east-1-instance-types.csv");
const OFFERINGS_CSV: &str = include_str!("../data/us-east-1-offerings.csv");

/// The region of the built-in catalog.
pub const BUILTIN_REGION: &str = "us-east-1";

/// Well-known label keys set on catalog entries.
pub mod labels {
    /// `node.kubernetes.io/instance-type`.
    pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    /// `kubernetes.io/arch`.
    pub const ARCH: &str = "kubernetes.io/arch";
    /// `kubernetes.io/os`.
    pub const OS: &str = "kubernetes.io/os";
    /// `topology.kubernetes.io/region`.
    pub const REGION: &str = "topology.kubernetes.io/region";
    /// `topology.kubernetes.io/zone` (offerings only).
    pub const ZONE: &str = "topology.kubernetes.io/zone";
    /// `karpenter.sh/capacity-type` (offerings only).
    pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
    /// `node.kubernetes.io/windows-build`.
    pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";
    /// `karpenter.k8s.aws/instance-category`.
    pub const INSTANCE_CATEGORY: &str = "karpenter.k8s.aws/instance-category";
    /// `karpenter.k8s.aws/instance-family`.
    pub const INSTANCE_FAMILY: &str = "karpenter.k8s.aws/instance-family";
    /// `karpenter.k8s.aws/instance-generation`.
    pub const INSTANCE_GENERATION: &str = "karpenter.k8s.aws/instance-generation";
    /// `karpenter.k8s.aws/instance-size`.
    pub const INSTANCE_SIZE: &str = "karpenter.k8s.aws/instance-size";
    /// `karpenter.k8s.aws/instance-cpu`.
    pub const INSTANCE_CPU: &str = "karpenter.k8s.aws/instance-cpu";
    /// `karpenter.k8s.aws/instance-cpu-manufacturer`.
    pub const INSTANCE_CPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-cpu-manufacturer";
    /// `karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz`.
    pub const INSTANCE_CPU_CLOCK_MHZ: &str =
        "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz";
    /// `karpenter.k8s.aws/instance-memory` (MiB).
    pub const INSTANCE_MEMORY: &str = "karpenter.k8s.aws/instance-memory";
    /// `karpenter.k8s.aws/instance-ebs-bandwidth` (Mbit/s).
    pub const INSTANCE_EBS_BANDWIDTH: &str = "karpenter.k8s.aws/instance-ebs-bandwidth";
    /// `karpenter.k8s.aws/instance-network-bandwidth` (Mbit/s).
    pub const INSTANCE_NETWORK_BANDWIDTH: &str = "karpenter.k8s.aws/instance-network-bandwidth";
    /// `karpenter.k8s.aws/instance-hypervisor`.
    pub const INSTANCE_HYPERVISOR: &str = "karpenter.k8s.aws/instance-hypervisor";
    /// `karpenter.k8s.aws/instance-encryption-in-transit-supported`.
    pub const INSTANCE_ENCRYPTION_IN_TRANSIT: &str =
        "karpenter.k8s.aws/instance-encryption-in-transit-supported";
    /// `karpenter.k8s.aws/instance-local-nvme` (GB).
    pub const INSTANCE_LOCAL_NVME: &str = "karpenter.k8s.aws/instance-local-nvme";
    /// `karpenter.k8s.aws/instance-capability-flex`.
    pub const INSTANCE_CAPABILITY_FLEX: &str = "karpenter.k8s.aws/instance-capability-flex";
    /// `karpenter.k8s.aws/instance-gpu-name`.
    pub const INSTANCE_GPU_NAME: &str = "karpenter.k8s.aws/instance-gpu-name";
    /// `karpenter.k8s.aws/instance-gpu-manufacturer`.
    pub const INSTANCE_GPU_MANUFACTURER: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
    /// `karpenter.k8s.aws/instance-gpu-count`.
    pub const INSTANCE_GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
    /// `karpenter.k8s.aws/instance-gpu-memory` (MiB per GPU).
    pub const INSTANCE_GPU_MEMORY: &str = "karpenter.k8s.aws/instance-gpu-memory";
    /// `karpenter.k8s.aws/instance-accelerator-name`.
    pub const INSTANCE_ACCELERATOR_NAME: &str = "karpenter.k8s.aws/instance-accelerator-name";
    /// `karpenter.k8s.aws/instance-accelerator-manufacturer`.
    pub const INSTANCE_ACCELERATOR_MANUFACTURER: &str =
        "karpenter.k8s.aws/instance-accelerator-manufacturer";
    /// `karpenter.k8s.aws/instance-accelerator-count`.
    pub const INSTANCE_ACCELERATOR_COUNT: &str = "karpenter.k8s.aws/instance-accelerator-count";
}

/// Extended resource names Karpenter's AWS provider puts in capacity.
pub mod resources {
    /// NVIDIA GPUs.
    pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
    /// AMD GPUs.
    pub const AMD_GPU: &str = "amd.com/gpu";
    /// Habana Gaudi accelerators.
    pub const HABANA_GAUDI: &str = "habana.ai/gaudi";
    /// AWS Neuron devices (Inferentia, Trainium).
    pub const AWS_NEURON: &str = "aws.amazon.com/neuron";
    /// AWS Neuron cores.
    pub const AWS_NEURON_CORE: &str = "aws.amazon.com/neuroncore";
    /// EFA interfaces.
    pub const EFA: &str = "vpc.amazonaws.com/efa";
    /// Branch ENIs for security groups for pods.
    pub const POD_ENI: &str = "vpc.amazonaws.com/pod-eni";
}

/// One instance type: its labels, capacity, overhead and offerings.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The instance type name, e.g. `m5.large`.
    pub name: String,
    /// Every well-known single-valued label the type offers (not zone / capacity type).
    pub labels: BTreeMap<String, String>,
    /// Node capacity.
    pub capacity: ResourceAmounts,
    /// kube-reserved + system-reserved + eviction threshold.
    pub overhead: ResourceAmounts,
    /// Offerings sorted by zone then capacity type.
    pub offerings: Vec<CatalogOffering>,
}

impl CatalogEntry {
    /// The core's instance type for this entry.
    #[must_use]
    pub fn to_instance_type(&self) -> karp_core::cloud::InstanceType {
        self.to_instance_type_with(Vec::new())
    }

    /// The core view with `extra` offerings besides the catalog's (a node class's capacity
    /// reservations, as `reserved` offerings).
    #[must_use]
    pub fn to_instance_type_with(
        &self,
        extra: Vec<karp_core::cloud::Offering>,
    ) -> karp_core::cloud::InstanceType {
        let offerings = self
            .offerings
            .iter()
            .map(|o| karp_core::cloud::Offering {
                zone: o.zone.clone(),
                capacity_type: o.capacity_type.clone(),
                price: o.price,
                available: o.available,
                reservation: None,
            })
            .chain(extra)
            .collect();
        karp_core::cloud::InstanceType::new(
            self.name.clone(),
            &self.labels,
            self.capacity.to_core(),
            self.overhead.to_core(),
            offerings,
        )
    }

    /// Capacity minus overhead, per resource (extended resources keep their capacity).
    pub fn allocatable(&self) -> ResourceAmounts {
        let mut a = self.capacity.clone();
        a.cpu_millis -= self.overhead.cpu_millis;
        a.memory_bytes -= self.overhead.memory_bytes;
        a.pods -= self.overhead.pods;
        a.ephemeral_storage_bytes -= self.overhead.ephemeral_storage_bytes;
        for (k, v) in &self.overhead.extended {
            if let Some(c) = a.extended.get_mut(k) {
                *c -= v;
            }
        }
        a
    }
}

/// Where and how an instance type can be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogOffering {
    /// The zone name, e.g. `us-east-1a`.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// USD per hour.
    pub price: f64,
    /// Whether the offering can currently be launched.
    pub available: bool,
}

/// The raw facts of one built-in instance type (one row of the embedded CSV).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFacts {
    /// Instance type name.
    pub name: String,
    /// `ProcessorInfo.SupportedArchitectures`, in AWS order.
    pub architectures: Vec<String>,
    /// Default vCPUs.
    pub vcpus: i64,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// `nitro`, `xen`, or empty for bare metal.
    pub hypervisor: String,
    /// Raw CPU manufacturer (`Intel`, `AMD`, `AWS`).
    pub cpu_manufacturer: String,
    /// Sustained clock in MHz (0 when unknown).
    pub sustained_clock_mhz: i64,
    /// Max EBS bandwidth, when EBS-optimized by default.
    pub ebs_max_bandwidth_mbps: Option<i64>,
    /// Network bandwidth in Mbit/s, when not vague.
    pub network_bandwidth_mbps: Option<i64>,
    /// `NetworkInfo.EncryptionInTransitSupported`.
    pub encryption_in_transit: bool,
    /// Instance storage total in GB.
    pub local_storage_gb: Option<i64>,
    /// Instance storage NVMe support (`required`, `supported`, `unsupported`).
    pub local_nvme_support: String,
    /// ENIs on the default network card.
    pub default_card_enis: i64,
    /// IPv4 addresses per ENI.
    pub ipv4_per_eni: i64,
    /// GPU name / manufacturer / count / MiB each, when GpuInfo has exactly one entry.
    pub gpu: Option<(String, String, i64, i64)>,
    /// Accelerator name / manufacturer / count (Neuron, or an inference accelerator without Neuron).
    pub accelerator: Option<(String, String, i64)>,
    /// Extended resources (zero entries omitted).
    pub extended: BTreeMap<String, i64>,
    /// Supported capacity types among `on-demand` / `spot`.
    pub usage_classes: Vec<String>,
}

/// An embedded-data row that did not parse (only possible if the data files were edited by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedded catalog data, {file} line {line}: {reason}")]
pub struct DataError {
    /// The data file.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// Errors of [`builtin_catalog`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The embedded data is malformed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The settings are invalid.
    #[error(transparent)]
    Settings(#[from] AllocatableError),
}

struct Rows<'a> {
    file: &'static str,
    header: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

fn rows(file: &'static str, text: &'static str) -> Result<Rows<'static>, DataError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = match lines.next() {
        Some((_, l)) => l.split(',').collect(),
        None => {
            return Err(DataError {
                file,
                line: 1,
                reason: "empty file".into(),
            })
        }
    };
    let mut out = Vec::new();
    for (i, l) in lines {
        let cells: Vec<&str> = l.split(',').collect();
        if cells.len() != header.len() {
            return Err(DataError {
                file,
                line: i + 1,
                reason: format!("{} cells, expected {}", cells.len(), header.len()),
            });
        }
        out.push((i + 1, cells));
    }
    Ok(Rows {
        file,
        header,
        rows: out,
    })
}

struct Row<'r> {
    file: &'static str,
    line: usize,
    header: &'r [&'r str],
    cells: &'r [&'r str],
}

impl Row<'_> {
    fn err(&self, reason: String) -> DataError {
        DataError {
            file: self.file,
            line: self.line,
            reason,
        }
    }
    fn str(&self, col: &str) -> Result<&str, DataError> {
        self.header
            .iter()
            .position(|h| *h == col)
            .and_then(|i| self.cells.get(i).copied())
            .ok_or_else(|| self.err(format!("missing column {col}")))
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, DataError> {
        let s = self.str(col)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| self.err(format!("{col}: not an integer: {s:?}")))
    }
    fn int(&self, col: &str) -> Result<i64, DataError> {
        self.opt_int(col)?
            .ok_or_else(|| self.err(format!("{col}: empty")))
    }
    fn boolean(&self, col: &str) -> Result<bool, DataError> {
        match self.str(col)? {
            "true" => Ok(true),
            "false" => Ok(false),
            s => Err(self.err(format!("{col}: not a boolean: {s:?}"))),
        }
    }
}

fn parse_type(row: &Row<'_>) -> Result<TypeFacts, DataError> {
    let mut extended = BTreeMap::new();
    for (col, name) in [
        ("nvidia_gpus", resources::NVIDIA_GPU),
        ("amd_gpus", resources::AMD_GPU),
        ("habana_gaudis", resources::HABANA_GAUDI),
        ("neuron_devices", resources::AWS_NEURON),
        ("neuron_cores", resources::AWS_NEURON_CORE),
        ("efa_interfaces", resources::EFA),
        ("pod_enis", resources::POD_ENI),
    ] {
        let v = row.int(col)?;
        if v != 0 {
            extended.insert(name.to_string(), v);
        }
    }
    let gpu = match row.str("gpu_name")? {
        "" => None,
        name => Some((
            name.to_string(),
            row.str("gpu_manufacturer")?.to_string(),
            row.int("gpu_count")?,
            row.int("gpu_memory_mib")?,
        )),
    };
    let accelerator = match (row.str("neuron_name")?, row.str("inference_accel_name")?) {
        ("", "") => None,
        ("", name) => Some((
            name.to_string(),
            row.str("inference_accel_manufacturer")?.to_string(),
            row.int("inference_accel_count")?,
        )),
        // Karpenter: Neuron devices are labelled with manufacturer "aws" and the device count.
        (name, _) => Some((
            name.to_string(),
            "aws".to_string(),
            row.int("neuron_devices")?,
        )),
    };
    Ok(TypeFacts {
        name: row.str("name")?.to_string(),
        architectures: row
            .str("architectures")?
            .split('|')
            .map(str::to_string)
            .collect(),
        vcpus: row.int("vcpus")?,
        memory_mib: row.int("memory_mib")?,
        hypervisor: row.str("hypervisor")?.to_string(),
        cpu_manufacturer: row.str("cpu_manufacturer")?.to_string(),
        sustained_clock_mhz: row.int("sustained_clock_mhz")?,
        ebs_max_bandwidth_mbps: row.opt_int("ebs_max_bandwidth_mbps")?,
        network_bandwidth_mbps: row.opt_int("network_bandwidth_mbps")?,
        encryption_in_transit: row.boolean("encryption_in_transit")?,
        local_storage_gb: row.opt_int("local_storage_gb")?,
        local_nvme_support: row.str("local_nvme_support")?.to_string(),
        default_card_enis: row.int("card0_max_enis")?,
        ipv4_per_eni: row.int("ipv4_per_eni")?,
        gpu,
        accelerator,
        extended,
        usage_classes: row
            .str("usage_classes")?
            .split('|')
            .map(str::to_string)
            .collect(),
    })
}

/// Parses the embedded instance-type facts, sorted by name.
///
/// # Errors
/// [`DataError`] if the embedded data is malformed (a test checks it is not).
pub fn builtin_type_facts() -> Result<Vec<TypeFacts>, DataError> {
    let r = rows("us-east-1-instance-types.csv", TYPES_CSV)?;
    let mut out = Vec::with_capacity(r.rows.len());
    for (line, cells) in &r.rows {
        out.push(parse_type(&Row {
            file: r.file,
            line: *line,
            header: &r.header,
            cells,
        })?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Parses the embedded offerings: instance type → offerings sorted by zone then capacity type.
///
/// # Errors
/// [`DataError`] if the embedded data is malformed.
pub fn builtin_offerings() -> Result<BTreeMap<String, Vec<CatalogOffering>>, DataError> {
    let r = rows("us-east-1-offerings.csv", OFFERINGS_CSV)?;
    let mut out: BTreeMap<String, Vec<CatalogOffering>> = BTreeMap::new();
    for (line, cells) in &r.rows {
        let row = Row {
            file: r.file,
            line: *line,
            header: &r.header,
            cells,
        };
        let price_s = row.str("price")?;
        let price: f64 = price_s
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| row.err(format!("price: not a price: {price_s:?}")))?;
        out.entry(row.str("name")?.to_string())
            .or_default()
            .push(CatalogOffering {
                zone: row.str("zone")?.to_string(),
                capacity_type: row.str("capacity_type")?.to_string(),
                price,
                available: true,
            });
    }
    for offerings in out.values_mut() {
        offerings.sort_by(|a, b| (&a.zone, &a.capacity_type).cmp(&(&b.zone, &b.capacity_type)));
    }
    Ok(out)
}

/// Karpenter's `lowerKabobCase`: lowercase, spaces to dashes.
pub fn lower_kabob_case(s: &str) -> String {
    s.replace(' ', "-").to_lowercase()
}

/// Karpenter's `instanceTypeScheme` `(^[a-z]+)(\-[0-9]+tb)?([0-9]+).*\.`: (category, generation).
///
/// `m5.large` → (`m`, `5`); `u-6tb1.56xlarge` → (`u`, `1`); `trn1n.32xlarge` → (`trn`, `1`).
pub fn category_and_generation(name: &str) -> Option<(String, String)> {
    let letters = name.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let rest = &name[letters..];
    let digits_then_dot = |s: &str| -> Option<String> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        (n > 0 && s[n..].contains('.')).then(|| s[..n].to_string())
    };
    // Optional "-<digits>tb" group first (as the regex tries it first), else without it.
    if let Some(after_dash) = rest.strip_prefix('-') {
        let n = after_dash.bytes().take_while(u8::is_ascii_digit).count();
        if n > 0 {
            if let Some(after_tb) = after_dash[n..].strip_prefix("tb") {
                if let Some(generation) = digits_then_dot(after_tb) {
                    return Some((name[..letters].to_string(), generation));
                }
            }
        }
    }
    digits_then_dot(rest).map(|generation| (name[..letters].to_string(), generation))
}

/// The `kubernetes.io/arch` value: the first AWS architecture that maps to amd64 / arm64.
pub fn kube_arch(architectures: &[String]) -> Option<&'static str> {
    architectures.iter().find_map(|a| match a.as_str() {
        "x86_64" => Some("amd64"),
        "arm64" => Some("arm64"),
        _ => None,
    })
}

/// The labels Karpenter's `computeRequirements` gives a type (single-valued ones; zone, capacity type,
/// zone ID and tenancy are per-offering or multi-valued and left out). `None` when the type cannot run
/// the AMI family (no known architecture, or arm64 on Windows).
pub fn type_labels(
    facts: &TypeFacts,
    family: AmiFamily,
    region: Option<&str>,
) -> Option<BTreeMap<String, String>> {
    use labels::*;
    let arch = kube_arch(&facts.architectures)?;
    let os = if family.is_windows() {
        if arch != "amd64" {
            return None;
        }
        "windows"
    } else {
        "linux"
    };
    let mut l = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    set(INSTANCE_TYPE, facts.name.clone());
    set(ARCH, arch.to_string());
    set(OS, os.to_string());
    if let Some(region) = region {
        set(REGION, region.to_string());
    }
    if let Some(build) = family.windows_build() {
        set(WINDOWS_BUILD, build.to_string());
    }
    set(INSTANCE_CPU, facts.vcpus.to_string());
    set(INSTANCE_MEMORY, facts.memory_mib.to_string());
    set(INSTANCE_HYPERVISOR, facts.hypervisor.clone());
    set(
        INSTANCE_ENCRYPTION_IN_TRANSIT,
        facts.encryption_in_transit.to_string(),
    );
    if let Some((category, generation)) = category_and_generation(&facts.name) {
        set(INSTANCE_CATEGORY, category);
        set(INSTANCE_GENERATION, generation);
    }
    let parts: Vec<&str> = facts.name.split('.').collect();
    if let [family_part, size] = parts.as_slice() {
        set(INSTANCE_FAMILY, (*family_part).to_string());
        set(INSTANCE_SIZE, (*size).to_string());
    }
    if let Some(gb) = facts.local_storage_gb {
        if facts.local_nvme_support != "unsupported" {
            set(INSTANCE_LOCAL_NVME, gb.to_string());
        }
    }
    let flex = parts.first().is_some_and(|f| f.contains("-flex"));
    set(INSTANCE_CAPABILITY_FLEX, flex.to_string());
    if let Some(bw) = facts.network_bandwidth_mbps {
        set(INSTANCE_NETWORK_BANDWIDTH, bw.to_string());
    }
    if let Some((name, manufacturer, count, memory)) = &facts.gpu {
        set(INSTANCE_GPU_NAME, lower_kabob_case(name));
        set(INSTANCE_GPU_MANUFACTURER, lower_kabob_case(manufacturer));
        set(INSTANCE_GPU_COUNT, count.to_string());
        set(INSTANCE_GPU_MEMORY, memory.to_string());
    }
    if let Some((name, manufacturer, count)) = &facts.accelerator {
        set(INSTANCE_ACCELERATOR_NAME, lower_kabob_case(name));
        set(
            INSTANCE_ACCELERATOR_MANUFACTURER,
            lower_kabob_case(manufacturer),
        );
        set(INSTANCE_ACCELERATOR_COUNT, count.to_string());
    }
    set(
        INSTANCE_CPU_MANUFACTURER,
        lower_kabob_case(&facts.cpu_manufacturer),
    );
    set(
        INSTANCE_CPU_CLOCK_MHZ,
        facts.sustained_clock_mhz.to_string(),
    );
    if let Some(bw) = facts.ebs_max_bandwidth_mbps {
        set(INSTANCE_EBS_BANDWIDTH, bw.to_string());
    }
    Some(l)
}

/// The allocatable-formula facts of a type.
pub fn instance_facts(facts: &TypeFacts) -> InstanceFacts {
    InstanceFacts {
        vcpus: facts.vcpus,
        memory_mib: facts.memory_mib,
        first_architecture_arm64: facts.architectures.first().is_some_and(|a| a == "arm64"),
        default_card_enis: facts.default_card_enis,
        ipv4_per_eni: facts.ipv4_per_eni,
        local_storage_gb: facts.local_storage_gb,
        extended: facts.extended.clone(),
    }
}

/// The built-in us-east-1 catalog for the given node-class settings, sorted by name.
///
/// Types the AMI family cannot run (arm64 on Windows) are left out.
///
/// # Errors
/// [`CatalogError::Settings`] when a kubelet quantity is invalid; [`CatalogError::Data`] only if the
/// embedded files were corrupted (tests parse them).
pub fn builtin_catalog(settings: &NodeClassSettings) -> Result<Vec<CatalogEntry>, CatalogError> {
    settings.validate()?;
    let facts = builtin_type_facts()?;
    let mut offerings = builtin_offerings()?;
    let mut out = Vec::with_capacity(facts.len());
    for f in &facts {
        let Some(labels) = type_labels(f, settings.ami_family, Some(BUILTIN_REGION)) else {
            continue;
        };
        let (capacity, overhead) = allocatable::compute(&instance_facts(f), settings)?;
        out.push(CatalogEntry {
            name: f.name.clone(),
            labels,
            capacity,
            overhead,
            offerings: offerings.remove(&f.name).unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
