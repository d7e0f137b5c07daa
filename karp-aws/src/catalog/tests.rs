use super::*;
use crate::allocatable::KubeletSettings;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

fn catalog() -> Vec<CatalogEntry> {
    builtin_catalog(&NodeClassSettings::default()).expect("embedded data parses")
}

fn entry<'a>(c: &'a [CatalogEntry], name: &str) -> &'a CatalogEntry {
    c.iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} in catalog"))
}

#[test]
fn embedded_data_parses_sorted_unique_and_every_type_has_offerings() {
    let c = catalog();
    assert_eq!(c.len(), 1235);
    assert!(
        c.windows(2).all(|w| w[0].name < w[1].name),
        "sorted and unique"
    );
    for e in &c {
        assert!(!e.offerings.is_empty(), "{} has offerings", e.name);
        assert!(e.offerings.iter().all(|o| o.price > 0.0 && o.available));
        assert!(e
            .offerings
            .iter()
            .all(|o| o.capacity_type == "spot" || o.capacity_type == "on-demand"));
        assert!(e.capacity.pods > 0, "{}", e.name);
        assert_eq!(e.labels.get(labels::INSTANCE_TYPE), Some(&e.name));
    }
    assert_eq!(
        builtin_offerings()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        11238
    );
}

#[test]
fn max_pods_equals_the_vpc_cni_table_for_every_type() {
    let table = include_str!("../../data/eni-max-pods.txt");
    let expected: BTreeMap<&str, i64> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect();
    let mut checked = 0;
    for e in catalog() {
        if let Some(want) = expected.get(e.name.as_str()) {
            assert_eq!(e.capacity.pods, *want, "{}", e.name);
            checked += 1;
        }
    }
    assert!(checked > 1200, "checked {checked}");
}

#[test]
fn m5_large_matches_karpenter_by_hand() {
    let c = catalog();
    let e = entry(&c, "m5.large");
    // cpu 2 vCPU; kube-reserved 60m + 10m
    assert_eq!(e.capacity.cpu_millis, 2000);
    assert_eq!(e.overhead.cpu_millis, 70);
    // memory 8192Mi - ceil(614.4)Mi = 7577Mi; overhead 11*29+255 = 574Mi + 100Mi eviction
    assert_eq!(e.capacity.memory_bytes, 7577 * MIB);
    assert_eq!(e.overhead.memory_bytes, 674 * MIB);
    // pods: 3 ENIs * (10 - 1) + 2
    assert_eq!(e.capacity.pods, 29);
    // ephemeral 20Gi; overhead 1Gi + 2Gi
    assert_eq!(e.capacity.ephemeral_storage_bytes, 20 * GIB);
    assert_eq!(e.overhead.ephemeral_storage_bytes, 3 * GIB);
    let a = e.allocatable();
    assert_eq!(
        (a.cpu_millis, a.memory_bytes, a.pods),
        (1930, 6903 * MIB, 29)
    );
    assert_eq!(a.ephemeral_storage_bytes, 17 * GIB);
    // trunking compatible: 9 branch ENIs
    assert_eq!(
        e.capacity.extended,
        BTreeMap::from([(resources::POD_ENI.to_string(), 9)])
    );
    let od = e
        .offerings
        .iter()
        .find(|o| o.zone == "us-east-1a" && o.capacity_type == "on-demand")
        .unwrap();
    assert_eq!(od.price, 0.096);
    let spot = e
        .offerings
        .iter()
        .find(|o| o.zone == "us-east-1a" && o.capacity_type == "spot")
        .unwrap();
    assert_eq!(spot.price, 0.0424);
}

#[test]
fn m5_large_has_exactly_karpenters_labels() {
    let c = catalog();
    let got = &entry(&c, "m5.large").labels;
    let want: BTreeMap<String, String> = [
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "m5.large"),
        ("topology.kubernetes.io/region", "us-east-1"),
        ("karpenter.k8s.aws/instance-capability-flex", "false"),
        ("karpenter.k8s.aws/instance-category", "m"),
        ("karpenter.k8s.aws/instance-cpu", "2"),
        ("karpenter.k8s.aws/instance-cpu-manufacturer", "intel"),
        (
            "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz",
            "3100",
        ),
        ("karpenter.k8s.aws/instance-ebs-bandwidth", "4750"),
        (
            "karpenter.k8s.aws/instance-encryption-in-transit-supported",
            "false",
        ),
        ("karpenter.k8s.aws/instance-family", "m5"),
        ("karpenter.k8s.aws/instance-generation", "5"),
        ("karpenter.k8s.aws/instance-hypervisor", "nitro"),
        ("karpenter.k8s.aws/instance-memory", "8192"),
        ("karpenter.k8s.aws/instance-network-bandwidth", "750"),
        ("karpenter.k8s.aws/instance-size", "large"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, &want);
}

#[test]
fn graviton_m6g_large_loses_64_mib() {
    let c = catalog();
    let e = entry(&c, "m6g.large");
    assert_eq!(e.labels[labels::ARCH], "arm64");
    assert_eq!(e.labels[labels::INSTANCE_CPU_MANUFACTURER], "aws");
    // (8192 - 64) = 8128Mi; ceil(8128 * 0.075 = 609.6) = 610; 7518Mi
    assert_eq!(e.capacity.memory_bytes, 7518 * MIB);
    assert_eq!(e.allocatable().memory_bytes, (7518 - 674) * MIB);
}

#[test]
fn gpu_g5_xlarge_has_nvidia_gpu_and_gpu_labels() {
    let c = catalog();
    let e = entry(&c, "g5.xlarge");
    assert_eq!(e.capacity.extended.get(resources::NVIDIA_GPU), Some(&1));
    assert_eq!(e.labels[labels::INSTANCE_GPU_NAME], "a10g");
    assert_eq!(e.labels[labels::INSTANCE_GPU_MANUFACTURER], "nvidia");
    assert_eq!(e.labels[labels::INSTANCE_GPU_COUNT], "1");
    assert_eq!(e.labels[labels::INSTANCE_GPU_MEMORY], "22888");
    assert_eq!(e.labels[labels::INSTANCE_LOCAL_NVME], "250");
    // pods 4 * 14 + 2 = 58; memory 16384 - ceil(1228.8) = 15155Mi; overhead 11*58+255 = 893 + 100 = 993Mi
    assert_eq!(e.capacity.pods, 58);
    assert_eq!(e.capacity.memory_bytes, 15155 * MIB);
    assert_eq!(e.overhead.memory_bytes, 993 * MIB);
    // 4 vCPU: 60 + 10 + 10 = 80m
    assert_eq!(e.overhead.cpu_millis, 80);
}

#[test]
fn multi_card_types_use_the_default_card_enis() {
    let c = catalog();
    // c6in.32xlarge: card 0 has 8 ENIs (of 16): 8 * 49 + 2 = 394
    assert_eq!(entry(&c, "c6in.32xlarge").capacity.pods, 394);
    let p5 = entry(&c, "p5.48xlarge");
    // p5.48xlarge: card 0 has 2 ENIs (of 64): 2 * 49 + 2 = 100
    assert_eq!(p5.capacity.pods, 100);
    assert_eq!(p5.capacity.extended.get(resources::NVIDIA_GPU), Some(&8));
    assert_eq!(p5.capacity.extended.get(resources::EFA), Some(&32));
    // 2097152Mi - ceil(157286.4) = 1939865Mi
    assert_eq!(p5.capacity.memory_bytes, 1_939_865 * MIB);
    // cpu: 80m + 0.25% of 188000m = 550m
    assert_eq!(p5.overhead.cpu_millis, 550);
    assert_eq!(p5.overhead.memory_bytes, (11 * 100 + 255 + 100) * MIB);
    assert_eq!(p5.labels[labels::INSTANCE_NETWORK_BANDWIDTH], "3200000");
}

#[test]
fn neuron_types_get_neuron_resources_and_accelerator_labels() {
    let c = catalog();
    let e = entry(&c, "inf2.xlarge");
    assert_eq!(e.capacity.extended.get(resources::AWS_NEURON), Some(&1));
    assert_eq!(
        e.capacity.extended.get(resources::AWS_NEURON_CORE),
        Some(&2)
    );
    assert_eq!(e.labels[labels::INSTANCE_ACCELERATOR_NAME], "inferentia2");
    assert_eq!(e.labels[labels::INSTANCE_ACCELERATOR_MANUFACTURER], "aws");
    assert_eq!(e.labels[labels::INSTANCE_ACCELERATOR_COUNT], "1");
    assert_eq!(e.labels[labels::INSTANCE_CATEGORY], "inf");
    assert!(!e.labels.contains_key(labels::INSTANCE_GPU_NAME));
}

#[test]
fn special_names_and_bare_metal_labels() {
    let c = catalog();
    let u = entry(&c, "u-6tb1.56xlarge");
    assert_eq!(u.labels[labels::INSTANCE_CATEGORY], "u");
    assert_eq!(u.labels[labels::INSTANCE_GENERATION], "1");
    assert_eq!(u.labels[labels::INSTANCE_FAMILY], "u-6tb1");
    assert!(
        u.offerings.iter().all(|o| o.capacity_type == "on-demand"),
        "no spot usage class"
    );
    let flex = entry(&c, "c7i-flex.large");
    assert_eq!(flex.labels[labels::INSTANCE_CAPABILITY_FLEX], "true");
    assert_eq!(flex.labels[labels::INSTANCE_CATEGORY], "c");
    // bare metal: Karpenter labels the empty hypervisor string
    assert_eq!(
        entry(&c, "m5.metal").labels[labels::INSTANCE_HYPERVISOR],
        ""
    );
    // vague network performance: no bandwidth label
    assert!(!entry(&c, "m4.large")
        .labels
        .contains_key(labels::INSTANCE_NETWORK_BANDWIDTH));
}

#[test]
fn category_regex_cases() {
    let cg = |n: &str| category_and_generation(n).map(|(c, g)| format!("{c}/{g}"));
    assert_eq!(cg("m5.large").as_deref(), Some("m/5"));
    assert_eq!(cg("trn1n.32xlarge").as_deref(), Some("trn/1"));
    assert_eq!(cg("u-12tb1.112xlarge").as_deref(), Some("u/1"));
    assert_eq!(cg("u7i-12tb.224xlarge").as_deref(), Some("u/7"));
    assert_eq!(cg("x2iedn.xlarge").as_deref(), Some("x/2"));
    assert_eq!(cg("p6-b200.48xlarge").as_deref(), Some("p/6"));
    assert_eq!(cg("m5"), None);
    assert_eq!(cg("5m.large"), None);
    assert_eq!(cg("u-6tb.large"), None);
}

#[test]
fn kubelet_settings_flow_into_the_builtin_catalog() {
    let s = NodeClassSettings::default().with_kubelet(KubeletSettings {
        max_pods: Some(110),
        ..Default::default()
    });
    let c = builtin_catalog(&s).unwrap();
    assert!(c.iter().all(|e| e.capacity.pods == 110));
    let mut bad = KubeletSettings::default();
    bad.system_reserved.insert("cpu".into(), "lots".into());
    let err = builtin_catalog(&NodeClassSettings::default().with_kubelet(bad)).unwrap_err();
    assert!(matches!(err, CatalogError::Settings(_)));
}

#[test]
fn windows_catalog_drops_arm64_and_labels_windows() {
    let c = builtin_catalog(&NodeClassSettings::default().with_ami_family(AmiFamily::Windows2022))
        .unwrap();
    assert!(c
        .iter()
        .all(|e| e.labels[labels::ARCH] == "amd64" && e.labels[labels::OS] == "windows"));
    assert_eq!(
        entry(&c, "m5.large").labels[labels::WINDOWS_BUILD],
        "10.0.20348"
    );
}

#[test]
fn builtin_catalog_is_deterministic() {
    assert_eq!(catalog(), catalog());
}
