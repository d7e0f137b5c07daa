//! `karp plan` on arbitrary manifest text: never panics, and every plan it returns passes the
//! independent validator.
#![no_main]

use karp_operator::commands::plan::{plan_documents, PlanError, Solver};
use libfuzzer_sys::fuzz_target;

#[path = "common/catalog.rs"]
mod catalog;
#[path = "common/skip.rs"]
mod skip;

use catalog::catalog;
use skip::input;

/// Prepended to half the inputs (odd first byte) so the rest is planned against a pool.
const PREFIX: &str = r#"apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec: {amiSelectorTerms: [{alias: al2023@latest}]}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
---
"#;

fuzz_target!(|data: &[u8]| {
    let Some((_, text)) = input(data, PREFIX) else {
        return;
    };
    match plan_documents("fuzz.yaml", &text, catalog(), Solver::Ffd) {
        Ok(plan) => {
            if let Err(e) = plan.validate() {
                panic!("plan_documents returned a plan that fails validation: {e}");
            }
        }
        // Debug-assertion builds (cargo fuzz's default) validate inside plan_documents.
        Err(e @ PlanError::InvalidPlan { .. }) => panic!("plan_documents: {e}"),
        Err(_) => {}
    }
});
