//! Launch flexibility of a planned NodeClaim: which instance types it may launch on.
//!
//! A packer's plan prices each NodeClaim at its cheapest offering, but the cloud may be short of
//! exactly that offering when the claim launches. The claim therefore carries every instance
//! type that holds its pods and whose cheapest compatible offering costs at most `margin` more
//! than the chosen one, so the launch (EC2 CreateFleet, the insufficient-capacity cache) can fall
//! back without re-planning. A claim that would launch on spot keeps at least
//! `min_spot_options` types (the next cheapest beyond the margin when needed), because spot's
//! price-capacity-optimized allocation needs a wide pool — Karpenter requires 15 options for
//! spot-to-spot moves for the same reason. The trade-off: a larger margin launches more often
//! at the first attempt, at up to `margin` more per hour when the cheapest offering is short.
//!
//! ```
//! use karp_core::packing::flexibility::limit_options;
//! use karp_core::testing::{instance_type, nodepool, pod};
//! use karp_core::cluster::ClusterSnapshot;
//! use karp_core::scheduling::{schedule, SchedulerOptions};
//!
//! let types = vec![
//!     instance_type("a").cpu("2").memory("8Gi").price(0.100).capacity_types(["on-demand"]).build(),
//!     instance_type("b").cpu("2").memory("8Gi").price(0.105).capacity_types(["on-demand"]).build(),
//!     instance_type("c").cpu("4").memory("16Gi").price(0.200).capacity_types(["on-demand"]).build(),
//! ];
//! let snapshot = ClusterSnapshot {
//!     node_pools: vec![nodepool("default", types)],
//!     pods: vec![pod("p").cpu("1").build()],
//!     ..Default::default()
//! };
//! let claim = &schedule(&snapshot, &SchedulerOptions::default()).new_nodeclaims[0];
//! assert_eq!(claim.instance_types.len(), 3);
//! let limited = limit_options(claim, 0.10, 15);
//! let names: Vec<&str> = limited.instance_types.iter().map(|t| t.name.as_str()).collect();
//! assert_eq!(names, ["a", "b"]);
//! ```

use crate::labels;
use crate::scheduling::NewNodeClaim;

/// Karpenter's minimum of spot instance-type options for a spot launch it may move later.
pub const MIN_SPOT_OPTIONS: usize = 15;

/// The default price margin of a planned claim's options over its chosen offering (10 %).
pub const DEFAULT_PRICE_MARGIN: f64 = 0.10;

/// `claim` with its instance-type options limited to those whose cheapest compatible offering
/// costs at most `(1 + margin)` × the chosen offering's price (see the module docs); at least
/// `min_spot_options` when the claim launches on spot. The chosen offering stays; a claim whose
/// `minValues` the limit would break is returned unchanged.
#[must_use]
pub fn limit_options(claim: &NewNodeClaim, margin: f64, min_spot_options: usize) -> NewNodeClaim {
    let cap = claim.cheapest.price * (1.0 + margin.max(0.0));
    let price = |it: &crate::cloud::InstanceType| {
        it.cheapest_offering(&claim.requirements)
            .map_or(f64::INFINITY, |o| o.price)
    };
    let mut ranked: Vec<(f64, &str)> = claim
        .instance_types
        .iter()
        .map(|it| (price(it), it.name.as_str()))
        .filter(|(p, _)| p.is_finite())
        .collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    let within = ranked.iter().filter(|(p, _)| *p <= cap + 1e-12).count();
    let spot = claim.cheapest.capacity_type == labels::CAPACITY_SPOT;
    let keep_n = if spot {
        within.max(min_spot_options).min(ranked.len())
    } else {
        within
    };
    let keep: std::collections::BTreeSet<&str> =
        ranked.iter().take(keep_n).map(|(_, n)| *n).collect();
    if keep.is_empty() {
        return claim.clone();
    }
    match crate::disruption::consolidation::narrow(claim, |it| keep.contains(it.name.as_str())) {
        Ok(c) if !c.instance_types.is_empty() => c,
        _ => claim.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterSnapshot;
    use crate::scheduling::{schedule, SchedulerOptions};
    use crate::testing::{instance_type, nodepool, pod};

    fn claim(types: Vec<std::sync::Arc<crate::cloud::InstanceType>>) -> NewNodeClaim {
        let snapshot = ClusterSnapshot {
            node_pools: vec![nodepool("default", types)],
            pods: vec![pod("p").cpu("1").build()],
            ..Default::default()
        };
        schedule(&snapshot, &SchedulerOptions::default()).new_nodeclaims[0].clone()
    }

    #[test]
    fn spot_claims_keep_fifteen_options_beyond_the_margin_and_on_demand_ones_do_not() {
        let spot: Vec<_> = (0..20)
            .map(|i| {
                instance_type(&format!("t{i:02}"))
                    .cpu("2")
                    .memory("8Gi")
                    .price(0.1 + 0.05 * f64::from(i))
                    .build()
            })
            .collect();
        let c = claim(spot);
        assert_eq!(c.cheapest.capacity_type, "spot");
        let limited = limit_options(&c, 0.10, MIN_SPOT_OPTIONS);
        assert_eq!(limited.instance_types.len(), 15);
        assert_eq!(limited.cheapest, c.cheapest, "the chosen offering stays");
        // The requirement lists exactly the options kept.
        let req = limited
            .requirements
            .get(labels::INSTANCE_TYPE)
            .map(|r| r.values().len());
        assert_eq!(req, Some(15));

        let od: Vec<_> = (0..20)
            .map(|i| {
                instance_type(&format!("t{i:02}"))
                    .cpu("2")
                    .memory("8Gi")
                    .price(0.1 + 0.005 * f64::from(i))
                    .capacity_types(["on-demand"])
                    .build()
            })
            .collect();
        let c = claim(od);
        // 0.100 … 0.110 within 10 %: three options.
        let limited = limit_options(&c, 0.10, MIN_SPOT_OPTIONS);
        let names: Vec<&str> = limited
            .instance_types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["t00", "t01", "t02"]);
        // A zero margin keeps the chosen type only; a huge one keeps everything.
        assert_eq!(
            limit_options(&c, 0.0, MIN_SPOT_OPTIONS)
                .instance_types
                .len(),
            1
        );
        assert_eq!(
            limit_options(&c, 10.0, MIN_SPOT_OPTIONS)
                .instance_types
                .len(),
            20
        );
    }
}
