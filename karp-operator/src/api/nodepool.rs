//! Serde types for `karpenter.sh/v1` `NodePool`, with Karpenter's field names.
//!
//! Unknown fields are ignored; fields of the wrong type are deserialization errors. Scalars that
//! Kubernetes stores as strings (requirement values, limits, durations) also accept plain YAML
//! numbers, as people write them. The pre-v1 field `spec.disruption.expireAfter` is read and
//! honoured by [`NodePoolSpec::expire_after`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};

/// A string that may be written as a YAML / JSON number or boolean too (`"4"`, `4`, `1.5`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct FlexString(pub String);

impl<'de> Deserialize<'de> for FlexString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(serde_json::Number),
            B(bool),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) => Ok(FlexString(s)),
            Ok(Raw::N(n)) => Ok(FlexString(n.to_string())),
            Ok(Raw::B(b)) => Ok(FlexString(b.to_string())),
            Err(_) => Err(serde::de::Error::custom("expected a string or a number")),
        }
    }
}

/// A `NodePool` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// `karpenter.sh/v1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// `NodePool`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Metadata (a namespace, as Helm may render it, is ignored: NodePools are cluster-scoped).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: NodePoolSpec,
    /// The status as last written (karp writes it only when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// `spec.template`: what every node of the pool looks like.
    #[serde(default)]
    pub template: NodeClaimTemplate,
    /// `spec.disruption`.
    #[serde(default)]
    pub disruption: Option<Disruption>,
    /// `spec.limits`: resource name (or `nodes`) to quantity.
    #[serde(default)]
    pub limits: BTreeMap<String, FlexString>,
    /// `spec.weight` (1..=100; higher is tried first).
    #[serde(default)]
    pub weight: Option<i32>,
    /// `spec.replicas`: a static pool keeps exactly this many nodes whatever the pods need
    /// (Karpenter's static capacity); only `limits.nodes` and no `weight` go with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
}

/// The annotation holding a NodePool's template hash (on the pool and on its NodeClaims).
pub const NODEPOOL_HASH: &str = "karpenter.sh/nodepool-hash";
/// The annotation naming how that hash was computed; hashes are compared only under equal versions.
pub const NODEPOOL_HASH_VERSION: &str = "karpenter.sh/nodepool-hash-version";
/// karp's hash version. Karpenter's own versions (`v3`, …) differ, so claims Karpenter made are
/// re-annotated with karp's hash on migration instead of all drifting at once.
pub const KARP_HASH_VERSION: &str = "karp-v1";

impl NodePoolSpec {
    /// The hash of the template fields a node cannot change in place (labels, annotations,
    /// taints, startup taints, node class reference), as Karpenter hashes its static fields:
    /// requirements are judged separately (`RequirementsDrifted`), `expireAfter` and
    /// `terminationGracePeriod` are behavioural. Taints are order-insensitive. FNV-1a 64 over a
    /// canonical JSON rendering, printed in decimal; stable across Rust releases.
    #[must_use]
    pub fn template_hash(&self) -> String {
        let t = &self.template;
        let sorted = |v: &[TaintSpec]| {
            let mut v: Vec<String> = v
                .iter()
                .map(|t| serde_json::to_string(t).unwrap_or_default())
                .collect();
            v.sort();
            v
        };
        let canonical = serde_json::json!({
            "labels": t.metadata.labels,
            "annotations": t.metadata.annotations,
            "taints": sorted(&t.spec.taints),
            "startupTaints": sorted(&t.spec.startup_taints),
            "nodeClassRef": t.spec.node_class_ref,
        })
        .to_string();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.to_string()
    }

    /// `spec.template.spec.expireAfter`, else the pre-v1 `spec.disruption.expireAfter`.
    #[must_use]
    pub fn expire_after(&self) -> Option<&str> {
        self.template
            .spec
            .expire_after
            .as_ref()
            .or_else(|| {
                self.disruption
                    .as_ref()
                    .and_then(|d| d.expire_after.as_ref())
            })
            .map(|s| s.0.as_str())
    }
}

/// `spec.template`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    /// `spec.template.metadata`.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// `spec.template.spec`.
    #[serde(default)]
    pub spec: NodeClaimTemplateSpec,
}

/// `spec.template.metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels every node gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations every node gets.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.template.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    /// Requirements on instance types and labels.
    #[serde(default)]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Taints every node gets.
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
    /// Taints present only while the node starts.
    #[serde(default)]
    pub startup_taints: Vec<TaintSpec>,
    /// The node class (`EC2NodeClass`).
    #[serde(default)]
    pub node_class_ref: Option<NodeClassReference>,
    /// Node lifetime (`720h`, `Never`).
    #[serde(default)]
    pub expire_after: Option<FlexString>,
    /// How long a draining node may take.
    #[serde(default)]
    pub termination_grace_period: Option<FlexString>,
}

/// A requirement with Karpenter's `minValues`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirementWithMinValues {
    /// Label key.
    #[serde(default)]
    pub key: String,
    /// Operator (In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte).
    #[serde(default)]
    pub operator: String,
    /// Values.
    #[serde(default)]
    pub values: Vec<FlexString>,
    /// The least number of distinct values the launch must keep.
    #[serde(default)]
    pub min_values: Option<i64>,
}

/// A taint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaintSpec {
    /// Key.
    #[serde(default)]
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default)]
    pub effect: String,
}

/// `spec.template.spec.nodeClassRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassReference {
    /// `karpenter.k8s.aws`.
    #[serde(default)]
    pub group: Option<String>,
    /// `EC2NodeClass`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The node class name.
    #[serde(default)]
    pub name: String,
}

/// `spec.disruption`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// `WhenEmpty`, `WhenEmptyOrUnderutilized` or `Balanced`.
    #[serde(default)]
    pub consolidation_policy: Option<String>,
    /// k of the `Balanced` policy (1..=3, default 2; only with `Balanced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation_threshold: Option<i64>,
    /// Delay before consolidating (`1m`, `Never`).
    #[serde(default)]
    pub consolidate_after: Option<FlexString>,
    /// Disruption budgets.
    #[serde(default)]
    pub budgets: Vec<Budget>,
    /// The pre-v1 location of `spec.template.spec.expireAfter` (honoured, with a warning).
    #[serde(default)]
    pub expire_after: Option<FlexString>,
}

/// One disruption budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Node count or percentage (`10%`, `0`).
    #[serde(default)]
    pub nodes: Option<FlexString>,
    /// Cron schedule when the budget is active.
    #[serde(default)]
    pub schedule: Option<String>,
    /// How long it is active after each schedule hit.
    #[serde(default)]
    pub duration: Option<FlexString>,
    /// Disruption reasons it applies to (`Empty`, `Drifted`, `Underutilized`).
    #[serde(default)]
    pub reasons: Vec<String>,
}
