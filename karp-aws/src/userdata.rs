//! Node bootstrap user data per AMI family: AL2023 nodeadm `NodeConfig` (MIME multipart),
//! Bottlerocket TOML, AL2 `bootstrap.sh`. Custom AMIs get the user's user data only.
//!
//! The user's `spec.userData` is merged as Karpenter does: AL2023 and AL2 parts come first in the
//! MIME archive and karp's part last (so karp's node labels, taints and max pods win); for
//! Bottlerocket the user's TOML comes first and karp appends only the `settings.kubernetes` keys
//! the user did not set.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use karp_core::taints::Taint;

use crate::allocatable::AmiFamily;

/// What the node needs to join the cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bootstrap {
    /// Cluster name.
    pub cluster_name: String,
    /// API server URL.
    pub cluster_endpoint: String,
    /// Base64 CA bundle.
    pub ca_bundle: String,
    /// Service CIDR.
    pub cluster_cidr: String,
    /// Cluster DNS IPs (kubelet `clusterDNS`), when set on the node class.
    pub cluster_dns: Vec<String>,
    /// Node labels to register with.
    pub labels: BTreeMap<String, String>,
    /// Taints to register with (NodePool taints and startup taints, plus the unregistered taint).
    pub taints: Vec<Taint>,
    /// kubelet max pods.
    pub max_pods: Option<i64>,
    /// The user's `spec.userData`.
    pub custom: Option<String>,
}

const BOUNDARY: &str = "//";

fn quote_yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn taint_string(t: &Taint) -> String {
    if t.value.is_empty() {
        format!("{}:{}", t.key, t.effect.as_str())
    } else {
        format!("{}={}:{}", t.key, t.value, t.effect.as_str())
    }
}

fn node_labels_flag(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The MIME parts of a user's user data: a whole MIME archive is split into its parts; a bare
/// document becomes one part whose type is guessed (`NodeConfig` YAML or a shell script).
fn custom_parts(custom: &str) -> Vec<(String, String)> {
    let trimmed = custom.trim_start();
    if trimmed.starts_with("MIME-Version:") {
        let Some(boundary) = custom.lines().find_map(|l| {
            l.split("boundary=")
                .nth(1)
                .map(|b| b.trim().trim_matches('"').to_string())
        }) else {
            return vec![("text/x-shellscript".into(), custom.to_string())];
        };
        let sep = format!("--{boundary}");
        let mut parts = Vec::new();
        for chunk in custom.split(&sep).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let chunk = chunk.trim_start_matches(['\r', '\n']);
            let (headers, body) = chunk
                .split_once("\n\n")
                .or_else(|| chunk.split_once("\r\n\r\n"))
                .unwrap_or(("", chunk));
            let ctype = headers
                .lines()
                .find_map(|l| l.strip_prefix("Content-Type:"))
                .map_or("text/x-shellscript", str::trim)
                .to_string();
            parts.push((ctype, body.trim_end().to_string()));
        }
        return parts;
    }
    let ctype = if trimmed.starts_with("apiVersion: node.eks.aws") {
        "application/node.eks.aws"
    } else {
        "text/x-shellscript; charset=\"us-ascii\""
    };
    vec![(ctype.into(), custom.trim_end().to_string())]
}

fn mime(parts: &[(String, String)]) -> String {
    let mut s =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for (ctype, body) in parts {
        let _ = write!(s, "--{BOUNDARY}\nContent-Type: {ctype}\n\n{body}\n\n");
    }
    let _ = writeln!(s, "--{BOUNDARY}--");
    s
}

/// AL2023 nodeadm `NodeConfig`.
#[must_use]
pub fn al2023_node_config(b: &Bootstrap) -> String {
    let mut s = String::from("apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n");
    let _ = write!(
        s,
        "  cluster:\n    name: {}\n    apiServerEndpoint: {}\n    certificateAuthority: {}\n    cidr: {}\n",
        quote_yaml(&b.cluster_name),
        quote_yaml(&b.cluster_endpoint),
        quote_yaml(&b.ca_bundle),
        quote_yaml(&b.cluster_cidr)
    );
    s.push_str("  kubelet:\n    config:\n");
    if let Some(n) = b.max_pods {
        let _ = writeln!(s, "      maxPods: {n}");
    }
    if !b.cluster_dns.is_empty() {
        s.push_str("      clusterDNS:\n");
        for ip in &b.cluster_dns {
            let _ = writeln!(s, "      - {}", quote_yaml(ip));
        }
    }
    if !b.taints.is_empty() {
        s.push_str("      registerWithTaints:\n");
        for t in &b.taints {
            let _ = writeln!(
                s,
                "      - key: {}\n        value: {}\n        effect: {}",
                quote_yaml(&t.key),
                quote_yaml(&t.value),
                t.effect.as_str()
            );
        }
    }
    s.push_str("    flags:\n");
    let _ = writeln!(
        s,
        "    - {}",
        quote_yaml(&format!("--node-labels={}", node_labels_flag(&b.labels)))
    );
    s
}

/// Bottlerocket settings TOML.
#[must_use]
pub fn bottlerocket_toml(b: &Bootstrap) -> String {
    let custom = b.custom.clone().unwrap_or_default();
    let user_sets = |key: &str| {
        // Only keys inside the user's [settings.kubernetes] table count.
        let mut in_table = false;
        for line in custom.lines() {
            let l = line.trim();
            if l.starts_with('[') {
                in_table = l == "[settings.kubernetes]";
            } else if in_table && l.split('=').next().map(str::trim) == Some(key) {
                return true;
            }
        }
        false
    };
    let toml_str = |s: &str| quote_yaml(s);
    let mut kube = Vec::new();
    for (k, v) in [
        ("cluster-name", toml_str(&b.cluster_name)),
        ("api-server", toml_str(&b.cluster_endpoint)),
        ("cluster-certificate", toml_str(&b.ca_bundle)),
    ] {
        if !user_sets(k) {
            kube.push(format!("{k} = {v}"));
        }
    }
    if let Some(n) = b.max_pods {
        if !user_sets("max-pods") {
            kube.push(format!("max-pods = {n}"));
        }
    }
    if !b.cluster_dns.is_empty() && !user_sets("cluster-dns-ip") {
        kube.push(format!("cluster-dns-ip = {}", toml_str(&b.cluster_dns[0])));
    }
    let mut s = String::new();
    if !custom.trim().is_empty() {
        s.push_str(custom.trim_end());
        s.push_str("\n\n");
    }
    if !kube.is_empty() {
        let has_table = custom.lines().any(|l| l.trim() == "[settings.kubernetes]");
        if has_table {
            // TOML forbids a second [settings.kubernetes]; use dotted keys instead.
            for k in kube {
                let _ = writeln!(s, "settings.kubernetes.{k}");
            }
        } else {
            s.push_str("[settings.kubernetes]\n");
            for k in kube {
                let _ = writeln!(s, "{k}");
            }
        }
    }
    if !b.labels.is_empty() {
        s.push_str("\n[settings.kubernetes.node-labels]\n");
        for (k, v) in &b.labels {
            let _ = writeln!(s, "{} = {}", toml_str(k), toml_str(v));
        }
    }
    if !b.taints.is_empty() {
        let mut by_key: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in &b.taints {
            by_key.entry(&t.key).or_default().push(toml_str(&format!(
                "{}:{}",
                t.value,
                t.effect.as_str()
            )));
        }
        s.push_str("\n[settings.kubernetes.node-taints]\n");
        for (k, vs) in by_key {
            let _ = writeln!(s, "{} = [{}]", toml_str(k), vs.join(", "));
        }
    }
    s
}

/// AL2 `bootstrap.sh` script.
#[must_use]
pub fn al2_script(b: &Bootstrap) -> String {
    let mut extra = format!("--node-labels={}", node_labels_flag(&b.labels));
    if !b.taints.is_empty() {
        let taints: Vec<String> = b.taints.iter().map(taint_string).collect();
        let _ = write!(extra, " --register-with-taints={}", taints.join(","));
    }
    let mut s = String::from(
        "#!/bin/bash -xe\nexec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n",
    );
    let _ = write!(
        s,
        "/etc/eks/bootstrap.sh '{}' --apiserver-endpoint '{}' --b64-cluster-ca '{}'",
        b.cluster_name, b.cluster_endpoint, b.ca_bundle
    );
    if let Some(ip) = b.cluster_dns.first() {
        let _ = write!(s, " \\\n--dns-cluster-ip '{ip}'");
    }
    if let Some(n) = b.max_pods {
        let _ = write!(s, " \\\n--use-max-pods false");
        let _ = write!(extra, " --max-pods={n}");
    }
    let _ = writeln!(s, " \\\n--kubelet-extra-args '{extra}'");
    s
}

/// The user data for a family, not yet base64-encoded.
#[must_use]
pub fn user_data(family: AmiFamily, b: &Bootstrap) -> String {
    let custom = || b.custom.as_deref().map(custom_parts).unwrap_or_default();
    match family {
        AmiFamily::AL2023 => {
            let mut parts = custom();
            parts.push(("application/node.eks.aws".into(), al2023_node_config(b)));
            mime(&parts)
        }
        AmiFamily::AL2 => {
            let mut parts = custom();
            parts.push((
                "text/x-shellscript; charset=\"us-ascii\"".into(),
                al2_script(b),
            ));
            mime(&parts)
        }
        AmiFamily::Bottlerocket => bottlerocket_toml(b),
        // Windows nodes bootstrap with EKS's PowerShell script; karp passes the cluster facts.
        AmiFamily::Windows2019 | AmiFamily::Windows2022 | AmiFamily::Windows2025 => {
            let mut s = String::from("<powershell>\n");
            if let Some(c) = &b.custom {
                let _ = writeln!(s, "{}", c.trim_end());
            }
            let _ = writeln!(
                s,
                "[string]$EKSBootstrapScriptFile = \"$env:ProgramFiles\\Amazon\\EKS\\Start-EKSBootstrap.ps1\"\n& $EKSBootstrapScriptFile -EKSClusterName '{}' -APIServerEndpoint '{}' -Base64ClusterCA '{}' -KubeletExtraArgs '--node-labels=\"{}\"'\n</powershell>",
                b.cluster_name,
                b.cluster_endpoint,
                b.ca_bundle,
                node_labels_flag(&b.labels)
            );
            s
        }
        AmiFamily::Custom => b.custom.clone().unwrap_or_default(),
    }
}

/// Base64 of the user data, as EC2 launch templates take it.
#[must_use]
pub fn encode(user_data: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(user_data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use karp_core::taints::Effect;

    fn bootstrap() -> Bootstrap {
        Bootstrap {
            cluster_name: "demo".into(),
            cluster_endpoint: "https://api.demo".into(),
            ca_bundle: "Q0E=".into(),
            cluster_cidr: "10.100.0.0/16".into(),
            cluster_dns: vec![],
            labels: BTreeMap::from([
                ("karpenter.sh/nodepool".into(), "default".into()),
                ("team".into(), "a".into()),
            ]),
            taints: vec![Taint::new(
                "karpenter.sh/unregistered",
                "",
                Effect::NoExecute,
            )],
            max_pods: Some(29),
            custom: None,
        }
    }

    #[test]
    fn al2023_is_a_mime_archive_with_a_node_config() {
        let ud = user_data(AmiFamily::AL2023, &bootstrap());
        assert!(ud.starts_with("MIME-Version: 1.0\n"));
        assert!(ud.contains("Content-Type: application/node.eks.aws"));
        assert!(ud.contains("    name: \"demo\"\n"));
        assert!(ud.contains("      maxPods: 29\n"));
        assert!(ud.contains("      - key: \"karpenter.sh/unregistered\"\n"));
        assert!(ud.contains("--node-labels=karpenter.sh/nodepool=default,team=a"));
        assert!(ud.trim_end().ends_with("--//--"));
    }

    #[test]
    fn al2023_keeps_user_parts_first() {
        let mut b = bootstrap();
        b.custom = Some("#!/bin/bash\necho hi\n".into());
        let ud = user_data(AmiFamily::AL2023, &b);
        let script = ud.find("echo hi").unwrap();
        let ours = ud.find("kind: NodeConfig").unwrap();
        assert!(script < ours);
        // A MIME archive from the user is split into its parts.
        b.custom = Some(mime(&[
            ("text/x-shellscript".into(), "echo one".into()),
            (
                "application/node.eks.aws".into(),
                "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig".into(),
            ),
        ]));
        let ud = user_data(AmiFamily::AL2023, &b);
        assert_eq!(ud.matches("kind: NodeConfig").count(), 2);
        assert_eq!(ud.matches("MIME-Version").count(), 1);
    }

    #[test]
    fn bottlerocket_merges_with_user_toml() {
        let mut b = bootstrap();
        let plain = bottlerocket_toml(&b);
        assert!(plain.starts_with("[settings.kubernetes]\ncluster-name = \"demo\""));
        assert!(plain.contains("max-pods = 29"));
        assert!(plain.contains("\"karpenter.sh/unregistered\" = [\":NoExecute\"]"));
        b.custom = Some("[settings.kubernetes]\nmax-pods = 110\n".into());
        let merged = bottlerocket_toml(&b);
        assert!(merged.contains("max-pods = 110"));
        assert!(!merged.contains("max-pods = 29"));
        assert_eq!(merged.matches("[settings.kubernetes]").count(), 1);
        assert!(merged.contains("settings.kubernetes.cluster-name = \"demo\""));
    }

    #[test]
    fn al2_runs_bootstrap_sh() {
        let ud = user_data(AmiFamily::AL2, &bootstrap());
        assert!(ud.contains("/etc/eks/bootstrap.sh 'demo' --apiserver-endpoint 'https://api.demo'"));
        assert!(ud.contains("--register-with-taints=karpenter.sh/unregistered:NoExecute"));
        assert!(ud.contains("--max-pods=29"));
        assert_eq!(encode("a"), "YQ==");
    }
}
