//! Unit tests of the MILP's algorithms: pricing against enumeration, the fluid LP's cuts,
//! diving.

use std::collections::BTreeMap;

use super::dive::DIVE_ROUNDS;
use super::model::{covers, Model, Pattern};
use crate::cluster::ClusterSnapshot;
use crate::resources::Resources;
use crate::testing::*;
use proptest::prelude::*;

const GPU: &str = "nvidia.com/gpu";

/// The most valuable pattern of config `k` under `value`, by enumerating every count vector.
fn enumerate(model: &Model, k: usize, value: &[f64]) -> f64 {
    fn go(
        model: &Model,
        cands: &[usize],
        value: &[f64],
        left: &Resources,
        chosen: &mut Vec<usize>,
    ) -> f64 {
        let Some((&g, rest)) = cands.split_first() else {
            return 0.0;
        };
        let mut best = go(model, rest, value, left, chosen);
        if chosen.iter().any(|h| model.groups[g].conflicts.contains(h)) {
            return best;
        }
        chosen.push(g);
        for n in 1..=model.groups[g].most_per_node() {
            let need = model.groups[g].requests.scaled(i64::from(n));
            if !covers(left, &need) {
                break;
            }
            let with = value[g] * f64::from(n) + go(model, rest, value, &left.minus(&need), chosen);
            best = best.max(with);
        }
        chosen.pop();
        best
    }
    let cands: Vec<usize> = (0..model.groups.len())
        .filter(|&g| model.fits[g].binary_search(&k).is_ok())
        .collect();
    go(
        model,
        &cands,
        value,
        &model.configs[k].room,
        &mut Vec::new(),
    )
}

/// The value of `pattern` under `value`, and whether it fits its config's room.
fn worth(model: &Model, pattern: &Pattern, value: &[f64]) -> (f64, bool) {
    let mut used = Resources::default();
    let mut total = 0.0;
    for &(g, n) in &pattern.counts {
        used.add_assign(&model.groups[g].requests.scaled(i64::from(n)));
        total += value[g] * f64::from(n);
    }
    (total, covers(&model.configs[pattern.config].room, &used))
}

fn arb_case() -> impl Strategy<Value = (ClusterSnapshot, Vec<f64>)> {
    let types = prop::collection::vec((1i64..4, 1i64..4, 0i64..3), 1..4);
    let shapes = prop::collection::vec((1i64..8, 1i64..8, 0i64..2, 1usize..5, any::<bool>()), 1..5);
    let duals = prop::collection::vec(0.0f64..1.0, 5);
    (types, shapes, duals).prop_map(|(types, shapes, duals)| {
        let types = types
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, mem, gpu))| {
                let b = instance_type(&format!("t{i}"))
                    .cpu(&(cpu * 2).to_string())
                    .memory(&format!("{}Gi", mem * 4))
                    .price(cpu as f64 * 0.1)
                    .spot_price(cpu as f64 * 0.1);
                if gpu > 0 {
                    b.resource(GPU, &gpu.to_string())
                } else {
                    b
                }
                .build()
            })
            .collect();
        let mut pods = Vec::new();
        for (s, (cpu, mem, gpu, count, port)) in shapes.into_iter().enumerate() {
            for i in 0..count {
                let b = pod(&format!("s{s}-{i}"))
                    .cpu(&format!("{}m", cpu * 250))
                    .memory(&format!("{}Mi", mem * 512));
                let b = if gpu > 0 { b.resource(GPU, "1") } else { b };
                pods.push(
                    if port {
                        b.host_port(9000 + s as i32)
                    } else {
                        b
                    }
                    .build(),
                );
            }
        }
        let s = ClusterSnapshot {
            node_pools: vec![nodepool("default", types)],
            pods,
            ..Default::default()
        };
        (s, duals)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Pricing: the branch-and-bound search finds the enumerated optimum, HiGHS's bound is at
    /// or above it and its pattern at or below it, and every cheap bound stays above it.
    #[test]
    fn pricing_agrees_with_enumeration((s, duals) in arb_case()) {
        let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
        let model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
        let value: Vec<f64> = (0..model.groups.len()).map(|g| duals[g % duals.len()]).collect();
        for k in 0..model.configs.len() {
            let best = enumerate(&model, k, &value);
            let found = model.search(k, &value, 1_000_000, f64::INFINITY, 0);
            prop_assert!(found.proved);
            prop_assert!((found.value - best).abs() < 1e-9, "search {} vs {best}", found.value);
            let (v, fits) = worth(&model, &found.pattern, &value);
            prop_assert!(fits && (v - found.value).abs() < 1e-9);
            for bound in [
                model.price_upper_bound(k, &value),
                model.refined_upper_bound(k, &value, f64::INFINITY),
                model.integer_upper_bound(k, &value),
            ] {
                prop_assert!(bound >= best - 1e-9, "bound {bound} below {best}");
            }
            if let Some((_, greedy)) = model.price(k, &value) {
                let (v, fits) = worth(&model, &greedy, &value);
                prop_assert!(fits && v <= best + 1e-9);
            }
            let (bound, v, pattern) = model.exact_price(k, &value, 10.0).expect("HiGHS solves a tiny knapsack");
            let (w, fits) = worth(&model, &pattern, &value);
            prop_assert!(fits && (w - v).abs() < 1e-9);
            prop_assert!(bound >= best - 1e-9 && v <= best + 1e-9, "HiGHS {v} ≤ {bound} vs {best}");
        }
    }

    /// Pattern cuts keep the fluid LP a relaxation: with cuts its optimum is at least the
    /// plain fluid optimum and at most the pattern LP over any set of patterns (which every
    /// integer plan is a point of), and every pattern its separation found fits its config.
    #[test]
    fn fluid_cuts_stay_below_the_pattern_lp((s, _) in arb_case()) {
        let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
        let mut model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
        prop_assume!(model.fits.iter().all(|f| !f.is_empty()));
        prop_assert!(model.seed_single());
        let plain = model.fluid(10.0, &|| true).expect("the fluid LP solves").value;
        let cut = model.fluid(10.0, &|| false).expect("the fluid LP solves");
        prop_assert!(cut.value >= plain - 1e-9, "cuts lowered the bound: {} < {plain}", cut.value);
        let zero = vec![0.0; model.groups.len()];
        for p in &cut.patterns {
            prop_assert!(worth(&model, p, &zero).1, "pattern {p:?} does not fit");
        }
        model.generate(50, &|| false).expect("the LP master solves");
        prop_assert!(
            cut.value <= model.lp_value * (1.0 + 1e-6) + 1e-9,
            "fluid with cuts {} above the pattern LP {}", cut.value, model.lp_value
        );
        let counts = model.solve_integer(&[], 10.0, 0.0).expect("the integer master solves");
        let cost: f64 = model.patterns.iter().zip(&counts)
            .map(|(p, c)| model.configs[p.config].price * f64::from(*c)).sum();
        prop_assert!(cut.value <= cost * (1.0 + 1e-6) + 1e-9, "fluid with cuts {} above a plan {cost}", cut.value);
    }

    /// Diving, run to the end or cut short at once (the integer master finishes), covers
    /// every pod with patterns that fit, and costs no less than the bound column generation
    /// proved.
    #[test]
    fn diving_covers_every_pod_with_fitting_patterns((s, _) in arb_case(), cut in any::<bool>()) {
        let pods: Vec<(usize, Vec<usize>)> = (0..s.pods.len()).map(|p| (p, vec![0])).collect();
        let mut model = Model::new(&s, &pods, &[], &[Resources::default()], BTreeMap::new(), false);
        prop_assume!(model.fits.iter().all(|f| !f.is_empty()));
        prop_assert!(model.seed_single());
        model.generate(50, &|| false).expect("the LP master solves");
        let plan = model.dive_plan(DIVE_ROUNDS, &|| cut, 10.0, 0.0).expect("a plan");
        let mut covered = vec![0usize; model.groups.len()];
        let mut cost = 0.0;
        for (pattern, n) in &plan {
            prop_assert!(*n > 0 && worth(&model, pattern, &covered.iter().map(|_| 0.0).collect::<Vec<_>>()).1);
            for &(g, c) in &pattern.counts {
                prop_assert!(c <= model.groups[g].most_per_node());
                covered[g] += c as usize * *n as usize;
            }
            cost += model.configs[pattern.config].price * f64::from(*n);
        }
        for (g, grp) in model.groups.iter().enumerate() {
            prop_assert!(covered[g] >= grp.demand, "group {g}: {} of {}", covered[g], grp.demand);
        }
        prop_assert!(cost >= model.cg_bound - 1e-9, "plan {cost} below the bound {}", model.cg_bound);
    }
}
