//! Pure conversions from EC2 API shapes (aws-sdk-ec2 types) into karp's facts.
//!
//! The same rules as `data/generate.py` (which built the embedded catalog from a captured
//! `DescribeInstanceTypes` response), so a live catalog and the built-in one agree type for type;
//! a test against moto_server checks that for all of them.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    EbsOptimizedSupport, Instance as Ec2Instance, InstanceStateName, InstanceTypeInfo,
    InstanceTypeOffering, SpotPrice,
};

use crate::catalog::{resources, TypeFacts};

/// Karpenter's bandwidth label, approximated from `NetworkPerformance` (see `generate.py`):
/// `"[Nx ]M Gigabit"` gives N·M·1000; "Up to" types sum the cards' baseline; vague values give none.
#[must_use]
pub fn network_bandwidth_mbps(info: &InstanceTypeInfo) -> Option<i64> {
    let net = info.network_info()?;
    let perf = net.network_performance().unwrap_or("");
    if ["Low", "Moderate", "High"].iter().any(|w| perf.contains(w)) {
        return None;
    }
    if let Some(gbit) = perf.strip_suffix(" Gigabit") {
        let (mult, value) = match gbit.split_once("x ") {
            Some((m, v)) => (m.parse::<f64>().ok(), v),
            None => (Some(1.0), gbit),
        };
        if let (Some(mult), Ok(v)) = (mult, value.parse::<f64>()) {
            // Truncation as Python's int(): the values are whole or halves of a Gbit.
            #[allow(clippy::cast_possible_truncation)]
            return Some((v * 1000.0 * mult) as i64);
        }
    }
    let cards = net.network_cards();
    if cards.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for c in cards {
        sum += c.baseline_bandwidth_in_gbps()?;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some((sum * 1000.0).round() as i64)
}

fn i(v: Option<i32>) -> i64 {
    i64::from(v.unwrap_or(0))
}

/// Converts one `DescribeInstanceTypes` entry into [`TypeFacts`]. `pod_enis` is the number of branch
/// ENIs (Karpenter's VPC limits table; the API does not report it). `None` when the entry lacks a
/// name, vCPUs, memory or network facts, or supports neither x86_64 nor arm64, or neither spot nor
/// on-demand.
#[must_use]
pub fn type_facts(info: &InstanceTypeInfo, pod_enis: i64) -> Option<TypeFacts> {
    let name = info.instance_type()?.as_str().to_string();
    let processor = info.processor_info()?;
    let architectures: Vec<String> = processor
        .supported_architectures()
        .iter()
        .map(|a| a.as_str().to_string())
        .collect();
    if !architectures.iter().any(|a| a == "x86_64" || a == "arm64") {
        return None;
    }
    let usage_classes: Vec<String> = info
        .supported_usage_classes()
        .iter()
        .map(|u| u.as_str().to_string())
        .filter(|u| u == "on-demand" || u == "spot")
        .collect();
    if usage_classes.is_empty() {
        return None;
    }
    let net = info.network_info()?;
    let default_card = net.default_network_card_index().unwrap_or(0);
    let card0 = net
        .network_cards()
        .iter()
        .find(|c| c.network_card_index().unwrap_or(0) == default_card);
    let default_card_enis = card0
        .and_then(|c| c.maximum_network_interfaces())
        .or(net.maximum_network_interfaces());
    let gpus = info.gpu_info().map(|g| g.gpus()).unwrap_or_default();
    let gpu = match gpus {
        [g] => Some((
            g.name().unwrap_or_default().to_string(),
            g.manufacturer().unwrap_or_default().to_string(),
            i(g.count()),
            i(g.memory_info().and_then(|m| m.size_in_mib())),
        )),
        _ => None,
    };
    let neuron = info
        .neuron_info()
        .map(|n| n.neuron_devices())
        .unwrap_or_default();
    let accels = info
        .inference_accelerator_info()
        .map(|a| a.accelerators())
        .unwrap_or_default();
    let neuron_devices: i64 = neuron.iter().map(|d| i(d.count())).sum();
    let accelerator = match (neuron, accels) {
        ([d], _) => Some((
            d.name().unwrap_or_default().to_string(),
            "aws".to_string(),
            neuron_devices,
        )),
        ([], [a]) if info.neuron_info().is_none() => Some((
            a.name().unwrap_or_default().to_string(),
            a.manufacturer().unwrap_or_default().to_string(),
            i(a.count()),
        )),
        _ => None,
    };
    let mut extended = BTreeMap::new();
    let by_manufacturer = |m: &str| -> i64 {
        gpus.iter()
            .filter(|g| g.manufacturer() == Some(m))
            .map(|g| i(g.count()))
            .sum()
    };
    let neuron_cores = neuron.first().map_or(0, |d| {
        i(d.count()) * i(d.core_info().and_then(|c| c.count()))
    });
    let efa = i(net.efa_info().and_then(|e| e.maximum_efa_interfaces()));
    for (key, v) in [
        (resources::NVIDIA_GPU, by_manufacturer("NVIDIA")),
        (resources::AMD_GPU, by_manufacturer("AMD")),
        (resources::HABANA_GAUDI, by_manufacturer("Habana")),
        (resources::AWS_NEURON, neuron_devices),
        (resources::AWS_NEURON_CORE, neuron_cores),
        (resources::EFA, efa),
        (resources::POD_ENI, pod_enis),
    ] {
        if v != 0 {
            extended.insert(key.to_string(), v);
        }
    }
    let ebs_max_bandwidth_mbps = info
        .ebs_info()
        .filter(|e| e.ebs_optimized_support() == Some(&EbsOptimizedSupport::Default))
        .and_then(|e| e.ebs_optimized_info())
        .and_then(|o| o.maximum_bandwidth_in_mbps())
        .map(i64::from);
    let storage = info.instance_storage_info();
    #[allow(clippy::cast_possible_truncation)]
    let sustained_clock_mhz =
        (processor.sustained_clock_speed_in_ghz().unwrap_or(0.0) * 1000.0).round() as i64;
    Some(TypeFacts {
        name,
        architectures,
        vcpus: i(info.v_cpu_info()?.default_v_cpus()),
        memory_mib: info.memory_info()?.size_in_mib()?,
        hypervisor: info
            .hypervisor()
            .map(|h| h.as_str().to_string())
            .unwrap_or_default(),
        cpu_manufacturer: processor.manufacturer().unwrap_or_default().to_string(),
        sustained_clock_mhz,
        ebs_max_bandwidth_mbps,
        network_bandwidth_mbps: network_bandwidth_mbps(info),
        encryption_in_transit: net.encryption_in_transit_supported().unwrap_or(false),
        local_storage_gb: storage.and_then(|s| s.total_size_in_gb()),
        local_nvme_support: storage
            .and_then(|s| s.nvme_support())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        default_card_enis: i(default_card_enis),
        ipv4_per_eni: i(net.ipv4_addresses_per_interface()),
        gpu,
        accelerator,
        extended,
        usage_classes,
    })
}

/// Instance type → zones it is offered in, from `DescribeInstanceTypeOfferings` with location type
/// `availability-zone`.
#[must_use]
pub fn zones_by_type(offerings: &[InstanceTypeOffering]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in offerings {
        if let (Some(t), Some(zone)) = (o.instance_type(), o.location()) {
            out.entry(t.as_str().to_string())
                .or_default()
                .push(zone.to_string());
        }
    }
    for zones in out.values_mut() {
        zones.sort();
        zones.dedup();
    }
    out
}

/// The latest spot price per (instance type, zone) from `DescribeSpotPriceHistory` rows; rows
/// without a parseable, finite, non-negative price are ignored. Ties on the timestamp keep the lower
/// price, so the result does not depend on row order.
#[must_use]
pub fn latest_spot_prices(rows: &[SpotPrice]) -> BTreeMap<(String, String), f64> {
    let mut latest: BTreeMap<(String, String), (i64, u32, f64)> = BTreeMap::new();
    for r in rows {
        let (Some(t), Some(zone), Some(price)) =
            (r.instance_type(), r.availability_zone(), r.spot_price())
        else {
            continue;
        };
        let Ok(price) = price.parse::<f64>() else {
            continue;
        };
        if !price.is_finite() || price < 0.0 {
            continue;
        }
        let ts = r
            .timestamp()
            .map_or((i64::MIN, 0), |d| (d.secs(), d.subsec_nanos()));
        let key = (t.as_str().to_string(), zone.to_string());
        let newer = latest.get(&key).is_none_or(|&(s, n, p)| {
            (ts.0, ts.1) > (s, n) || ((ts.0, ts.1) == (s, n) && price < p)
        });
        if newer {
            latest.insert(key, (ts.0, ts.1, price));
        }
    }
    latest.into_iter().map(|(k, (_, _, p))| (k, p)).collect()
}

/// The value of tag `key` on an EC2 resource's tag list.
#[must_use]
pub fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Whether an instance is gone or going (`shutting-down` or `terminated`).
#[must_use]
pub fn is_terminating(instance: &Ec2Instance) -> bool {
    matches!(
        instance.state().and_then(|s| s.name()),
        Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
    )
}
