//! Well-known label keys (Karpenter v1 and Kubernetes).

/// The NodePool a node belongs to.
pub const NODEPOOL: &str = "karpenter.sh/nodepool";
/// `spot`, `on-demand` or `reserved`.
pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
/// Availability zone.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// Region.
pub const REGION: &str = "topology.kubernetes.io/region";
/// Instance type name.
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
/// CPU architecture (`amd64`, `arm64`).
pub const ARCH: &str = "kubernetes.io/arch";
/// Operating system.
pub const OS: &str = "kubernetes.io/os";
/// Node hostname.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// Windows build.
pub const WINDOWS_BUILD: &str = "node.kubernetes.io/windows-build";
/// Marks nodes Karpenter registered.
pub const REGISTERED: &str = "karpenter.sh/registered";
/// Marks nodes Karpenter initialized.
pub const INITIALIZED: &str = "karpenter.sh/initialized";

/// Spot capacity.
pub const CAPACITY_SPOT: &str = "spot";
/// On-demand capacity.
pub const CAPACITY_ON_DEMAND: &str = "on-demand";
/// Reserved capacity.
pub const CAPACITY_RESERVED: &str = "reserved";

/// The core well-known labels: keys that node pools need not list for pods to select on them,
/// because instance types and offerings define them.
pub const WELL_KNOWN: [&str; 8] = [
    NODEPOOL,
    CAPACITY_TYPE,
    ZONE,
    REGION,
    INSTANCE_TYPE,
    ARCH,
    OS,
    WINDOWS_BUILD,
];

/// Whether `key` is one of the core well-known labels.
#[must_use]
pub fn is_well_known(key: &str) -> bool {
    WELL_KNOWN.contains(&key)
}

/// Map deprecated beta label keys to their GA names (as Karpenter normalizes them).
#[must_use]
pub fn normalize_key(key: &str) -> &str {
    match key {
        "failure-domain.beta.kubernetes.io/zone" => ZONE,
        "failure-domain.beta.kubernetes.io/region" => REGION,
        "beta.kubernetes.io/arch" => ARCH,
        "beta.kubernetes.io/os" => OS,
        "beta.kubernetes.io/instance-type" => INSTANCE_TYPE,
        other => other,
    }
}

/// Label domains a NodePool template may not set (Karpenter's restricted labels).
#[must_use]
pub fn is_restricted(key: &str) -> bool {
    let domain = key.split('/').next().unwrap_or("");
    key == HOSTNAME
        || (key.contains('/')
            && (domain == "karpenter.sh" || domain.ends_with(".karpenter.sh"))
            && !is_well_known(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_keys_normalize() {
        assert_eq!(
            normalize_key("failure-domain.beta.kubernetes.io/zone"),
            ZONE
        );
        assert_eq!(normalize_key("team"), "team");
    }

    #[test]
    fn restricted_labels() {
        assert!(is_restricted(HOSTNAME));
        assert!(is_restricted("karpenter.sh/custom"));
        assert!(!is_restricted(CAPACITY_TYPE));
        assert!(!is_restricted("team"));
    }
}
