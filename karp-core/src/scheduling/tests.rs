//! Scenario tests modelled on Karpenter's scheduling suite. Every plan passes the validator.

use super::*;
use crate::cluster::ClusterSnapshot;
use crate::testing::*;
use crate::validation::validate;

fn run(snapshot: &ClusterSnapshot) -> SchedulingResults {
    let r = schedule(snapshot, &SchedulerOptions::default());
    if let Err(v) = validate(snapshot, &r) {
        panic!("plan failed validation: {v:?}\nplan: {r:#?}");
    }
    r
}

#[test]
fn packs_pods_onto_one_node_when_they_fit() {
    let types = vec![instance_type("small").cpu("2").memory("4Gi").build(), instance_type("large").cpu("16").memory("64Gi").build()];
    let snap = ClusterSnapshot {
        node_pools: vec![nodepool("default", types)],
        pods: (0..10).map(|i| pod(&format!("p{i}")).cpu("1").memory("1Gi").build()).collect(),
        ..Default::default()
    };
    let r = run(&snap);
    assert_eq!(r.new_nodeclaims.len(), 1);
    assert_eq!(r.new_nodeclaims[0].pods.len(), 10);
    assert_eq!(r.new_nodeclaims[0].cheapest.instance_type, "large");
}
