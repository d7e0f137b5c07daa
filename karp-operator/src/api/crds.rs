//! The CustomResourceDefinitions karp serves: `karpenter.sh/v1` NodePool and NodeClaim and
//! `karpenter.k8s.aws/v1` EC2NodeClass, with Karpenter v1's field names, types, defaults, patterns,
//! CEL validation rules (`x-kubernetes-validations`), status subresources and printer columns, so
//! existing Karpenter manifests apply unchanged.
//!
//! The schemas are built with a small builder ([`S`]) rather than derived, so defaults and CEL rules
//! sit next to the fields they constrain. `karp crds` prints them; `charts/karp/crds/` holds committed
//! copies that a test keeps identical.

use serde_json::{json, Map, Value};

/// A schema node under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct S(Value);

impl S {
    fn typed(t: &str) -> Self {
        S(json!({ "type": t }))
    }

    /// A string.
    #[must_use]
    pub fn string() -> Self {
        Self::typed("string")
    }

    /// An integer.
    #[must_use]
    pub fn integer() -> Self {
        Self::typed("integer")
    }

    /// A boolean.
    #[must_use]
    pub fn boolean() -> Self {
        Self::typed("boolean")
    }

    /// A string restricted to `values`.
    #[must_use]
    pub fn enumeration(values: &[&str]) -> Self {
        Self::string().set("enum", json!(values))
    }

    /// An array of `items`.
    #[must_use]
    pub fn array(items: S) -> Self {
        Self::typed("array").set("items", items.0)
    }

    /// A map of string keys to `values`.
    #[must_use]
    pub fn map(values: S) -> Self {
        Self::typed("object").set("additionalProperties", values.0)
    }

    /// An object with `properties` (in the given order; serialized sorted).
    #[must_use]
    pub fn object(properties: Vec<(&str, S)>) -> Self {
        let mut props = Map::new();
        for (k, v) in properties {
            props.insert(k.to_string(), v.0);
        }
        Self::typed("object").set("properties", Value::Object(props))
    }

    /// A Kubernetes quantity (int or string with the quantity pattern).
    #[must_use]
    pub fn quantity() -> Self {
        S(json!({
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true
        }))
    }

    /// A free-form object whose fields are kept.
    #[must_use]
    pub fn preserve() -> Self {
        S(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
    }

    /// Sets any schema keyword.
    #[must_use]
    pub fn set(mut self, key: &str, value: Value) -> Self {
        if let Value::Object(m) = &mut self.0 {
            m.insert(key.to_string(), value);
        }
        self
    }

    /// A description.
    #[must_use]
    pub fn desc(self, d: &str) -> Self {
        self.set("description", json!(d))
    }

    /// A default value.
    #[must_use]
    pub fn default(self, v: Value) -> Self {
        self.set("default", v)
    }

    /// A regular expression the value must match.
    #[must_use]
    pub fn pattern(self, p: &str) -> Self {
        self.set("pattern", json!(p))
    }

    /// Required properties.
    #[must_use]
    pub fn required(self, keys: &[&str]) -> Self {
        self.set("required", json!(keys))
    }

    /// A CEL validation rule with its message.
    #[must_use]
    pub fn cel(mut self, rule: &str, message: &str) -> Self {
        if let Value::Object(m) = &mut self.0 {
            let list = m
                .entry("x-kubernetes-validations")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(a) = list {
                a.push(json!({"rule": rule, "message": message}));
            }
        }
        self
    }

    /// The JSON schema.
    #[must_use]
    pub fn into_value(self) -> Value {
        self.0
    }
}

/// Kubernetes' quantity pattern.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// A qualified label key.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(\/))?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$";
/// A label value.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// A Go duration of h/m/s below Go's maximum, or `Never` ([`super::duration::PATTERN`]).
pub const DURATION_OR_NEVER_PATTERN: &str = super::duration::PATTERN;

/// Well-known labels a NodePool may constrain although their domain is restricted.
const ALLOWED_K8S_LABELS: &str = r#"["beta.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region", "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/zone", "topology.kubernetes.io/region", "node.kubernetes.io/instance-type", "kubernetes.io/arch", "kubernetes.io/os", "node.kubernetes.io/windows-build"]"#;
/// The AWS provider's well-known labels.
const ALLOWED_AWS_LABELS: &str = r#"["karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported", "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor", "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation", "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size", "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory", "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth", "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory", "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer", "karpenter.k8s.aws/instance-accelerator-count"]"#;

/// The label-key restrictions, for one key (`self` is the key) or all keys of a map (`all`).
/// `restrict_nodepool_label`: whether `karpenter.sh/nodepool` itself is refused (NodePools; a
/// NodeClaim's requirements carry it, so Karpenter's NodeClaim CRD allows it).
fn restricted_label_rules(
    mut s: S,
    all: bool,
    allow_node_labels: bool,
    restrict_nodepool_label: bool,
) -> S {
    let domain = |v: &str| format!("{v}.find(\"^([^/]+)\")");
    let wrap = |body: String| {
        if all {
            format!("self.all(x, {})", body.replace("SELF", "x"))
        } else {
            body.replace("SELF", "self")
        }
    };
    let k8s_allowed = if allow_node_labels {
        ALLOWED_K8S_LABELS.to_string()
    } else {
        ALLOWED_K8S_LABELS.replace("\"node.kubernetes.io/instance-type\", ", "")
    };
    let d = domain("SELF");
    s = s.cel(
        &wrap(format!(
            "SELF in {k8s_allowed} || {d}.endsWith(\"node.kubernetes.io\") || {d}.endsWith(\"node-restriction.kubernetes.io\") || !{d}.endsWith(\"kubernetes.io\")"
        )),
        "label domain \"kubernetes.io\" is restricted",
    );
    s = s.cel(
        &wrap(format!(
            "{d}.endsWith(\"kops.k8s.io\") || !{d}.endsWith(\"k8s.io\")"
        )),
        "label domain \"k8s.io\" is restricted",
    );
    s = s.cel(
        &wrap(format!(
            "SELF in [\"karpenter.sh/capacity-type\", \"karpenter.sh/nodepool\"] || !{d}.endsWith(\"karpenter.sh\")"
        )),
        "label domain \"karpenter.sh\" is restricted",
    );
    if restrict_nodepool_label {
        s = s.cel(
            &wrap("SELF != \"karpenter.sh/nodepool\"".to_string()),
            "label \"karpenter.sh/nodepool\" is restricted",
        );
    }
    s = s.cel(
        &wrap("SELF != \"kubernetes.io/hostname\"".to_string()),
        "label \"kubernetes.io/hostname\" is restricted",
    );
    s.cel(
        &wrap(format!(
            "SELF in {ALLOWED_AWS_LABELS} || !{d}.endsWith(\"karpenter.k8s.aws\")"
        )),
        "label domain \"karpenter.k8s.aws\" is restricted",
    )
}

fn taint() -> S {
    S::object(vec![
        (
            "effect",
            S::enumeration(&["NoSchedule", "PreferNoSchedule", "NoExecute"])
                .desc("The effect of the taint on pods that do not tolerate it."),
        ),
        (
            "key",
            S::string()
                .set("minLength", json!(1))
                .pattern(LABEL_KEY_PATTERN)
                .desc("The taint key."),
        ),
        (
            "timeAdded",
            S::string()
                .set("format", json!("date-time"))
                .desc("When the taint was added (NoExecute taints only)."),
        ),
        (
            "value",
            S::string()
                .pattern(LABEL_KEY_PATTERN)
                .desc("The taint value."),
        ),
    ])
    .required(&["effect", "key"])
    .desc("A taint the node registers with.")
}

fn requirements(max_items: u32, restrict_nodepool_label: bool) -> S {
    let key = restricted_label_rules(
        S::string()
            .set("maxLength", json!(316))
            .pattern(LABEL_KEY_PATTERN)
            .desc("The label key the requirement constrains."),
        false,
        true,
        restrict_nodepool_label,
    );
    S::array(
        S::object(vec![
            ("key", key),
            (
                "minValues",
                S::integer()
                    .set("minimum", json!(1))
                    .set("maximum", json!(50))
                    .desc("The least number of distinct values the scheduler must keep for this key (flexibility)."),
            ),
            (
                "operator",
                S::enumeration(&["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"])
                    .desc("How the key relates to the values."),
            ),
            (
                "values",
                S::array(
                    S::string()
                        .set("maxLength", json!(63))
                        .pattern(LABEL_VALUE_PATTERN),
                )
                .set("x-kubernetes-list-type", json!("atomic"))
                .desc("Values: non-empty for In; one non-negative integer for Gt / Lt; empty for Exists / DoesNotExist."),
            ),
        ])
        .required(&["key", "operator"])
        .desc("A node selector requirement with an optional minimum number of values."),
    )
    .set("maxItems", json!(max_items))
    .cel(
        "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
        "requirements with operator 'In' must have a value defined",
    )
    .cel(
        "self.all(x, (x.operator == 'Gt' || x.operator == 'Lt') ? (x.values.size() == 1 && int(x.values[0]) >= 0) : true)",
        "requirements operator 'Gt' or 'Lt' must have a single positive integer value",
    )
    .cel(
        "self.all(x, (x.operator == 'In' && has(x.minValues)) ? x.values.size() >= x.minValues : true)",
        "requirements with 'minValues' must have at least that many values specified in the 'values' field",
    )
    .desc("Requirements every node launched from this template satisfies.")
}

fn node_class_ref() -> S {
    let non_empty = |what: &str| S::string().cel("self != ''", &format!("{what} may not be empty"));
    S::object(vec![
        (
            "group",
            non_empty("group")
                .pattern("^[^/]*$")
                .desc("API group of the node class (karpenter.k8s.aws)."),
        ),
        (
            "kind",
            non_empty("kind").desc("Kind of the node class (EC2NodeClass)."),
        ),
        ("name", non_empty("name").desc("Name of the node class.")),
    ])
    .required(&["group", "kind", "name"])
    .desc("The provider-specific node class the nodes use.")
}

fn conditions() -> S {
    S::array(
        S::object(vec![
            (
                "lastTransitionTime",
                S::string().set("format", json!("date-time")),
            ),
            ("message", S::string().set("maxLength", json!(32768))),
            (
                "observedGeneration",
                S::integer()
                    .set("format", json!("int64"))
                    .set("minimum", json!(0)),
            ),
            (
                "reason",
                S::string()
                    .set("maxLength", json!(1024))
                    .set("minLength", json!(1))
                    .pattern("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
            ),
            ("status", S::enumeration(&["True", "False", "Unknown"])),
            (
                "type",
                S::string()
                    .set("maxLength", json!(316))
                    .pattern(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"),
            ),
        ])
        .required(&["lastTransitionTime", "message", "reason", "status", "type"])
        .desc("A status condition."),
    )
    .desc("Conditions: health and readiness signals.")
}

fn nodeclaim_spec_common() -> Vec<(&'static str, S)> {
    vec![
        (
            "expireAfter",
            S::string()
                .default(json!("720h"))
                .pattern(DURATION_OR_NEVER_PATTERN)
                .desc("How long a node may live before it is replaced (or Never)."),
        ),
        ("nodeClassRef", node_class_ref()),
        ("requirements", requirements(100, true)),
        (
            "startupTaints",
            S::array(taint()).desc("Taints present at startup that a daemon removes; pods need not tolerate them."),
        ),
        ("taints", S::array(taint()).desc("Taints the node registers with.")),
        (
            "terminationGracePeriod",
            S::string()
                .pattern(super::duration::PATTERN_WITHOUT_NEVER)
                .desc("The longest a node may drain before its pods are deleted regardless of PDBs and do-not-disrupt."),
        ),
    ]
}

/// Names and scope of a CRD.
struct Names<'a> {
    group: &'a str,
    kind: &'a str,
    plural: &'a str,
    short_names: &'a [&'a str],
}

fn crd(
    names: &Names<'_>,
    columns: Value,
    spec: S,
    status: S,
    root_rules: Vec<(&str, &str)>,
) -> Value {
    let Names {
        group,
        kind,
        plural,
        short_names,
    } = *names;
    let categories = ["karpenter"];
    let scope = "Cluster";
    let mut root = S::object(vec![
        (
            "apiVersion",
            S::string().desc("The versioned schema of this object."),
        ),
        (
            "kind",
            S::string().desc("The REST resource this object represents."),
        ),
        ("metadata", S(json!({"type": "object"}))),
        ("spec", spec),
        ("status", status),
    ])
    .desc(&format!("{kind} is the Schema for the {plural} API."));
    for (rule, message) in root_rules {
        root = root.cel(rule, message);
    }
    let mut names = json!({
        "kind": kind,
        "listKind": format!("{kind}List"),
        "plural": plural,
        "singular": kind.to_lowercase(),
        "categories": categories,
    });
    if !short_names.is_empty() {
        names["shortNames"] = json!(short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": names,
            "scope": scope,
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": root.into_value()},
                "subresources": {"status": {}}
            }]
        }
    })
}

/// The `nodepools.karpenter.sh` CRD.
#[must_use]
pub fn nodepool_crd() -> Value {
    let labels_map = restricted_label_rules(
        S::map(
            S::string()
                .set("maxLength", json!(63))
                .pattern(LABEL_VALUE_PATTERN),
        )
        .set("maxProperties", json!(100))
        .desc("Labels every node of this pool gets."),
        true,
        false,
        true,
    );
    let mut template_spec_fields = nodeclaim_spec_common();
    template_spec_fields.retain(|(k, _)| *k != "nodeClassRef");
    template_spec_fields.push((
        "nodeClassRef",
        node_class_ref()
            .cel(
                "self.group == oldSelf.group",
                "nodeClassRef.group is immutable",
            )
            .cel(
                "self.kind == oldSelf.kind",
                "nodeClassRef.kind is immutable",
            ),
    ));
    let spec = S::object(vec![
        (
            "disruption",
            S::object(vec![
                (
                    "budgets",
                    S::array(
                        S::object(vec![
                            (
                                "duration",
                                S::string()
                                    .pattern(super::duration::BUDGET_PATTERN)
                                    .desc("How long the budget is active after each schedule hit (minutes and hours)."),
                            ),
                            (
                                "nodes",
                                S::string()
                                    .default(json!("10%"))
                                    .pattern("^((100|[0-9]{1,2})%|[0-9]+)$")
                                    .desc("The most NodeClaims of this pool that may be disrupted at once (count or percentage)."),
                            ),
                            (
                                "reasons",
                                S::array(S::enumeration(&["Underutilized", "Empty", "Drifted"]))
                                    .desc("The disruption reasons the budget applies to (all when unset)."),
                            ),
                            (
                                "schedule",
                                S::string()
                                    .pattern(r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$")
                                    .desc("Cron schedule (UTC) when the budget becomes active."),
                            ),
                        ])
                        .required(&["nodes"])
                        .desc("A limit on simultaneous disruptions."),
                    )
                    .set("maxItems", json!(50))
                    .default(json!([{"nodes": "10%"}]))
                    .cel(
                        "self.all(x, has(x.schedule) == has(x.duration))",
                        "'schedule' must be set with 'duration'",
                    )
                    .desc("Disruption budgets; the most restrictive active one applies."),
                ),
                (
                    "consolidateAfter",
                    S::string()
                        .pattern(DURATION_OR_NEVER_PATTERN)
                        .desc("How long a node must be consolidatable before it is disrupted (or Never)."),
                ),
                (
                    "consolidationPolicy",
                    S::enumeration(&["WhenEmpty", "WhenEmptyOrUnderutilized", "Balanced"])
                        .default(json!("WhenEmptyOrUnderutilized"))
                        .desc("Which nodes consolidation may remove (Balanced: only moves whose savings justify their disruption)."),
                ),
                (
                    "consolidationThreshold",
                    S::integer()
                        .set("format", json!("int32"))
                        .set("minimum", json!(1))
                        .set("maximum", json!(3))
                        .desc("k of the Balanced policy: a move is taken when its score (share of the pool's cost saved over share of its disruption) is at least 1/k (default 2)."),
                ),
            ])
            .required(&["consolidateAfter"])
            .cel(
                "!has(self.consolidationThreshold) || self.consolidationPolicy == 'Balanced'",
                "consolidationThreshold is only valid when consolidationPolicy is Balanced",
            )
            .default(json!({"consolidateAfter": "0s"}))
            .desc("How nodes of this pool may be disrupted."),
        ),
        (
            "limits",
            S::map(S::quantity()).desc("Caps on the total resources of this pool's nodes (cpu, memory, nodes, ...)."),
        ),
        (
            "template",
            S::object(vec![
                (
                    "metadata",
                    S::object(vec![
                        (
                            "annotations",
                            S::map(S::string()).desc("Annotations every node gets."),
                        ),
                        ("labels", labels_map),
                    ]),
                ),
                (
                    "spec",
                    S::object(template_spec_fields)
                        .required(&["nodeClassRef", "requirements"])
                        .desc("The NodeClaim spec of this pool's nodes (without resource requests)."),
                ),
            ])
            .required(&["spec"])
            .desc("What NodeClaims launched from this pool look like."),
        ),
        (
            "replicas",
            S::integer()
                .set("format", json!("int64"))
                .set("minimum", json!(0))
                .desc("Static capacity: the pool keeps exactly this many nodes whatever the pods need (no consolidation; only limits.nodes, no weight)."),
        ),
        (
            "weight",
            S::integer()
                .set("format", json!("int32"))
                .set("minimum", json!(1))
                .set("maximum", json!(100))
                .desc("Priority among pools: higher weights are tried first."),
        ),
    ])
    .required(&["template"])
    .cel(
        "has(self.replicas) == has(oldSelf.replicas)",
        "Cannot transition NodePool between static (replicas set) and dynamic (replicas unset) provisioning modes",
    )
    .cel(
        "!has(self.replicas) || (!has(self.limits) || size(self.limits) == 0 || (size(self.limits) == 1 && 'nodes' in self.limits))",
        "only 'limits.nodes' is supported on static NodePools",
    )
    .cel(
        "!has(self.replicas) || !has(self.weight)",
        "'weight' is not supported on static NodePools",
    )
    .desc("A pool of nodes karp launches for unschedulable pods.");
    let status = S::object(vec![
        ("conditions", conditions()),
        (
            "nodeClassObservedGeneration",
            S::integer().set("format", json!("int64")),
        ),
        (
            "nodes",
            S::integer()
                .set("format", json!("int64"))
                .desc("Number of nodes of this pool."),
        ),
        (
            "resources",
            S::map(S::quantity()).desc("Capacity of this pool's nodes."),
        ),
    ])
    .desc("The observed state of the pool.");
    let columns = json!([
        {"jsonPath": ".spec.template.spec.nodeClassRef.name", "name": "NodeClass", "type": "string"},
        {"jsonPath": ".status.resources.nodes", "name": "Nodes", "type": "string"},
        {"jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "name": "Ready", "type": "string"},
        {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        {"jsonPath": ".spec.weight", "name": "Weight", "priority": 1, "type": "integer"},
        {"jsonPath": ".status.resources.cpu", "name": "CPU", "priority": 1, "type": "string"},
        {"jsonPath": ".status.resources.memory", "name": "Memory", "priority": 1, "type": "string"}
    ]);
    let mut crd = crd(
        &Names {
            group: "karpenter.sh",
            kind: "NodePool",
            plural: "nodepools",
            short_names: &[],
        },
        columns,
        spec,
        status,
        Vec::new(),
    );
    // `kubectl scale nodepool NAME --replicas=N` on static pools, as Karpenter's CRD allows.
    crd["spec"]["versions"][0]["subresources"]["scale"] = json!({
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.nodes",
    });
    crd
}

/// The `nodeclaims.karpenter.sh` CRD.
#[must_use]
pub fn nodeclaim_crd() -> Value {
    let mut fields = nodeclaim_spec_common();
    // A claim's requirements include the pool's own `karpenter.sh/nodepool` (as Karpenter's do):
    // only a NodePool's requirements may not name it.
    fields.retain(|(k, _)| *k != "requirements");
    fields.push(("requirements", requirements(100, false)));
    fields.push((
        "resources",
        S::object(vec![(
            "requests",
            S::map(S::quantity()).desc("Resources the pods scheduled to this claim request."),
        )])
        .desc("Resource requirements of the claim."),
    ));
    let spec = S::object(fields)
        .required(&["nodeClassRef", "requirements"])
        .cel("self == oldSelf", "spec is immutable")
        .desc("What node to launch.");
    let status = S::object(vec![
        (
            "allocatable",
            S::map(S::quantity()).desc("Allocatable resources of the node."),
        ),
        (
            "capacity",
            S::map(S::quantity()).desc("Capacity of the node."),
        ),
        ("conditions", conditions()),
        ("imageID", S::string().desc("Image the instance runs.")),
        (
            "lastPodEventTime",
            S::string()
                .set("format", json!("date-time"))
                .desc("When a pod last scheduled to or left the node."),
        ),
        ("nodeName", S::string().desc("Name of the registered node.")),
        (
            "providerID",
            S::string().desc("The cloud provider's id of the instance."),
        ),
    ])
    .desc("The observed state of the claim.");
    let columns = json!([
        {"jsonPath": ".metadata.labels.node\\.kubernetes\\.io/instance-type", "name": "Type", "type": "string"},
        {"jsonPath": ".metadata.labels.karpenter\\.sh/capacity-type", "name": "Capacity", "type": "string"},
        {"jsonPath": ".metadata.labels.topology\\.kubernetes\\.io/zone", "name": "Zone", "type": "string"},
        {"jsonPath": ".status.nodeName", "name": "Node", "type": "string"},
        {"jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "name": "Ready", "type": "string"},
        {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        {"jsonPath": ".status.imageID", "name": "ImageID", "priority": 1, "type": "string"},
        {"jsonPath": ".status.providerID", "name": "ID", "priority": 1, "type": "string"},
        {"jsonPath": ".metadata.labels.karpenter\\.sh/nodepool", "name": "NodePool", "priority": 1, "type": "string"},
        {"jsonPath": ".spec.nodeClassRef.name", "name": "NodeClass", "priority": 1, "type": "string"},
        {"jsonPath": ".status.conditions[?(@.type==\"Drifted\")].status", "name": "Drifted", "priority": 1, "type": "string"}
    ]);
    crd(
        &Names {
            group: "karpenter.sh",
            kind: "NodeClaim",
            plural: "nodeclaims",
            short_names: &[],
        },
        columns,
        spec,
        status,
        Vec::new(),
    )
}

fn selector_tags() -> S {
    S::map(S::string())
        .set("maxProperties", json!(20))
        .cel(
            "self.all(k, k != '' && self[k] != '')",
            "empty tag keys or values aren't supported",
        )
        .desc("Tags to match (a value of * matches any value).")
}

/// The `ec2nodeclasses.karpenter.k8s.aws` CRD.
#[must_use]
pub fn ec2nodeclass_crd() -> Value {
    let subnet_terms = S::array(
        S::object(vec![
            ("id", S::string().pattern("subnet-[0-9a-z]+").desc("Subnet id.")),
            ("tags", selector_tags()),
        ])
        .desc("A subnet selector term: an id or tags."),
    )
    .set("maxItems", json!(30))
    .cel(
        "self.size() != 0",
        "subnetSelectorTerms cannot be empty",
    )
    .cel(
        "self.all(x, has(x.tags) || has(x.id))",
        "expected at least one, got none, ['tags', 'id']",
    )
    .cel(
        "!self.all(x, has(x.id) && has(x.tags))",
        "'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term",
    )
    .desc("Which subnets nodes launch in (terms are ORed).");
    let sg_terms = S::array(
        S::object(vec![
            ("id", S::string().pattern("sg-[0-9a-z]+").desc("Security group id.")),
            ("name", S::string().desc("Security group name.")),
            ("tags", selector_tags()),
        ])
        .desc("A security group selector term: an id, a name, or tags."),
    )
    .set("maxItems", json!(30))
    .cel(
        "self.size() != 0",
        "securityGroupSelectorTerms cannot be empty",
    )
    .cel(
        "self.all(x, has(x.tags) || has(x.id) || has(x.name))",
        "expected at least one, got none, ['tags', 'id', 'name']",
    )
    .cel(
        "!self.all(x, has(x.id) && (has(x.tags) || has(x.name)))",
        "'id' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term",
    )
    .cel(
        "!self.all(x, has(x.name) && (has(x.tags) || has(x.id)))",
        "'name' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term",
    )
    .desc("Which security groups nodes get (terms are ORed).");
    let ami_terms = S::array(
        S::object(vec![
            (
                "alias",
                S::string()
                    .set("maxLength", json!(30))
                    .cel(
                        "self.matches('^[a-zA-Z0-9]+@.+$')",
                        "'alias' is improperly formatted, must match the format 'family@version'",
                    )
                    .cel(
                        "self.split('@')[0] in ['al2','al2023','bottlerocket','windows2019','windows2022','windows2025']",
                        "family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022', 'windows2025'",
                    )
                    .cel(
                        "self.split('@')[0] in ['windows2019','windows2022','windows2025'] ? self.split('@')[1] == 'latest' : true",
                        "windows families may only specify version 'latest'",
                    )
                    .desc("An AMI alias, family@version (al2023@latest)."),
            ),
            ("id", S::string().pattern("ami-[0-9a-z]+").desc("AMI id.")),
            ("name", S::string().desc("AMI name (wildcards allowed).")),
            ("owner", S::string().desc("AMI owner: an account id or alias (self, amazon).")),
            ("ssmParameter", S::string().desc("SSM parameter holding an AMI id.")),
            ("tags", selector_tags()),
        ])
        .desc("An AMI selector term."),
    )
    .set("maxItems", json!(30))
    .set("minItems", json!(1))
    .cel(
        "self.all(x, has(x.tags) || has(x.id) || has(x.name) || has(x.alias) || has(x.ssmParameter))",
        "expected at least one, got none, ['tags', 'id', 'name', 'alias', 'ssmParameter']",
    )
    .cel(
        "!self.exists(x, has(x.id) && (has(x.alias) || has(x.tags) || has(x.name) || has(x.owner)))",
        "'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms",
    )
    .cel(
        "!self.exists(x, has(x.alias) && (has(x.id) || has(x.tags) || has(x.name) || has(x.owner)))",
        "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms",
    )
    .cel(
        "!(self.exists(x, has(x.alias)) && self.size() != 1)",
        "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms",
    )
    .desc("Which AMIs nodes run (terms are ORed).");
    let block_device = S::object(vec![
        ("deleteOnTermination", S::boolean()),
        ("encrypted", S::boolean()),
        ("iops", S::integer().set("format", json!("int64"))),
        ("kmsKeyID", S::string()),
        ("snapshotID", S::string()),
        (
            "throughput",
            S::integer().set("format", json!("int64")),
        ),
        (
            "volumeInitializationRate",
            S::integer().set("format", json!("int32")).set("minimum", json!(100)).set("maximum", json!(300)),
        ),
        (
            "volumeSize",
            S::string()
                .pattern(r"^((?:[1-9][0-9]{0,3}|[1-4][0-9]{4}|[5][0-8][0-9]{3}|59000)Gi|(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|[6][0-3][0-9]{3}|64000)G|([1-9]||[1-5][0-7]|58)Ti|([1-9]||[1-5][0-9]|6[0-3]|64)T)$")
                .set("x-kubernetes-int-or-string", json!(true))
                .desc("Volume size (Gi, G, Ti, T)."),
        ),
        (
            "volumeType",
            S::enumeration(&["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]),
        ),
    ])
    .cel(
        "has(self.snapshotID) || has(self.volumeSize)",
        "snapshotID or volumeSize must be defined",
    );
    let kubelet = S::object(vec![
        ("clusterDNS", S::array(S::string()).desc("Cluster DNS server IPs.")),
        ("cpuCFSQuota", S::boolean()),
        ("evictionHard", S::map(S::string()).cel(
            "self.all(x, x in ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available'])",
            "valid keys for evictionHard are ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']",
        )),
        ("evictionMaxPodGracePeriod", S::integer().set("format", json!("int32"))),
        ("evictionSoft", S::map(S::string()).cel(
            "self.all(x, x in ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available'])",
            "valid keys for evictionSoft are ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']",
        )),
        ("evictionSoftGracePeriod", S::map(S::string())),
        ("imageGCHighThresholdPercent", S::integer().set("format", json!("int32")).set("minimum", json!(0)).set("maximum", json!(100))),
        ("imageGCLowThresholdPercent", S::integer().set("format", json!("int32")).set("minimum", json!(0)).set("maximum", json!(100))),
        ("kubeReserved", S::map(S::string()).cel(
            "self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')",
            "valid keys for kubeReserved are ['cpu','memory','ephemeral-storage','pid']",
        ).cel("self.all(x, !self[x].startsWith('-'))", "kubeReserved value cannot be a negative resource quantity")),
        ("maxPods", S::integer().set("format", json!("int32")).set("minimum", json!(0))),
        ("podsPerCore", S::integer().set("format", json!("int32")).set("minimum", json!(0))),
        ("systemReserved", S::map(S::string()).cel(
            "self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')",
            "valid keys for systemReserved are ['cpu','memory','ephemeral-storage','pid']",
        ).cel("self.all(x, !self[x].startsWith('-'))", "systemReserved value cannot be a negative resource quantity")),
    ])
    .cel(
        "has(self.evictionSoft) ? has(self.evictionSoftGracePeriod) && self.evictionSoft.all(e, (e in self.evictionSoftGracePeriod)) : true",
        "evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod",
    )
    .cel(
        "has(self.evictionSoftGracePeriod) ? has(self.evictionSoft) && self.evictionSoftGracePeriod.all(e, (e in self.evictionSoft)) : true",
        "evictionSoftGracePeriod OwnerKey does not have a matching evictionSoft",
    )
    .cel(
        "has(self.imageGCHighThresholdPercent) && has(self.imageGCLowThresholdPercent) ? self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent : true",
        "imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent",
    )
    .desc("kubelet configuration of the nodes.");
    let spec = S::object(vec![
        (
            "amiFamily",
            S::enumeration(&["AL2", "AL2023", "Bottlerocket", "Custom", "Windows2019", "Windows2022", "Windows2025"])
                .desc("The AMI family (bootstrap format); implied by an alias."),
        ),
        ("amiSelectorTerms", ami_terms),
        (
            "associatePublicIPAddress",
            S::boolean().desc("Whether nodes get a public IPv4 address."),
        ),
        (
            "blockDeviceMappings",
            S::array(
                S::object(vec![
                    ("deviceName", S::string().desc("The device name (/dev/xvda).")),
                    ("ebs", block_device),
                    ("rootVolume", S::boolean().desc("Whether this is the root volume.")),
                ]),
            )
            .set("maxItems", json!(50))
            .cel(
                "self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1",
                "must have only one blockDeviceMappings with rootVolume",
            )
            .desc("EBS volumes of the nodes."),
        ),
        (
            "capacityReservationSelectorTerms",
            S::array(S::object(vec![
                ("id", S::string().pattern("^cr-[0-9a-z]+$")),
                ("instanceMatchCriteria", S::enumeration(&["open", "targeted"])),
                ("ownerID", S::string().pattern(r"^[0-9]{12}$")),
                ("tags", selector_tags()),
            ]))
            .set("maxItems", json!(30))
            .cel(
                "self.all(x, has(x.tags) || has(x.id) || has(x.instanceMatchCriteria))",
                "expected at least one, got none, ['tags', 'id', 'instanceMatchCriteria']",
            )
            .cel(
                "!self.all(x, has(x.id) && (has(x.tags) || has(x.ownerID) || has(x.instanceMatchCriteria)))",
                "'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation selector term",
            )
            .desc("Capacity reservations nodes may use (karpenter.sh/capacity-type: reserved)."),
        ),
        (
            "connectionTracking",
            S::object(vec![
                (
                    "tcpEstablishedTimeout",
                    S::integer()
                        .set("format", json!("int32"))
                        .set("minimum", json!(60))
                        .set("maximum", json!(432_000))
                        .desc("Idle timeout of established TCP connections, in seconds."),
                ),
                (
                    "udpStreamTimeout",
                    S::integer()
                        .set("format", json!("int32"))
                        .set("minimum", json!(60))
                        .set("maximum", json!(180))
                        .desc("Idle timeout of UDP flows classified as streams, in seconds."),
                ),
                (
                    "udpTimeout",
                    S::integer()
                        .set("format", json!("int32"))
                        .set("minimum", json!(30))
                        .set("maximum", json!(60))
                        .desc("Idle timeout of other UDP flows, in seconds."),
                ),
            ])
            .cel(
                "has(self.tcpEstablishedTimeout) || has(self.udpStreamTimeout) || has(self.udpTimeout)",
                "expected at least one, got none, ['tcpEstablishedTimeout', 'udpStreamTimeout', 'udpTimeout']",
            )
            .desc("Connection-tracking timeouts of the nodes' network interfaces."),
        ),
        ("context", S::string().desc("Context for CreateFleet (Outposts / reservations).")),
        (
            "cpuOptions",
            S::object(vec![(
                "nestedVirtualization",
                S::enumeration(&["enabled", "disabled"])
                    .desc("Nested virtualization on the nodes' CPUs."),
            )])
            .desc("CPU options of the nodes."),
        ),
        (
            "detailedMonitoring",
            S::boolean().desc("Whether EC2 detailed monitoring is on."),
        ),
        (
            "instanceProfile",
            S::string()
                .cel("self != ''", "instanceProfile cannot be empty")
                .desc("An existing instance profile (instead of role)."),
        ),
        (
            "instanceStorePolicy",
            S::enumeration(&["RAID0"]).desc("How local NVMe instance storage is used."),
        ),
        (
            "ipPrefixCount",
            S::integer()
                .set("format", json!("int32"))
                .set("minimum", json!(0))
                .desc("IPv4 prefixes assigned to the primary network interface (prefix delegation)."),
        ),
        ("kubelet", kubelet),
        (
            "metadataOptions",
            S::object(vec![
                ("httpEndpoint", S::enumeration(&["enabled", "disabled"]).default(json!("enabled"))),
                ("httpProtocolIPv6", S::enumeration(&["enabled", "disabled"]).default(json!("disabled"))),
                (
                    "httpPutResponseHopLimit",
                    S::integer()
                        .set("format", json!("int64"))
                        .set("minimum", json!(1))
                        .set("maximum", json!(64))
                        .default(json!(1)),
                ),
                ("httpTokens", S::enumeration(&["required", "optional"]).default(json!("required"))),
            ])
            .default(json!({"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled", "httpPutResponseHopLimit": 1, "httpTokens": "required"}))
            .desc("Instance metadata service options (IMDSv2 required by default)."),
        ),
        (
            "networkInterfaces",
            S::array(
                S::object(vec![
                    (
                        "deviceIndex",
                        S::integer()
                            .set("format", json!("int32"))
                            .set("minimum", json!(0))
                            .desc("Device index on the network card (0 on card 0 = primary)."),
                    ),
                    (
                        "interfaceType",
                        S::enumeration(&["interface", "efa-only"])
                            .desc("interface (ENA) or efa-only (EFA without IP networking)."),
                    ),
                    (
                        "networkCardIndex",
                        S::integer()
                            .set("format", json!("int32"))
                            .set("minimum", json!(0))
                            .desc("The network card the interface attaches to."),
                    ),
                ])
                .required(&["interfaceType"]),
            )
            .cel(
                "self.exists(x, (has(x.networkCardIndex) ? x.networkCardIndex : 0) == 0 && (has(x.deviceIndex) ? x.deviceIndex : 0) == 0 && x.interfaceType == 'interface')",
                "must include a primary interface (networkCardIndex 0, deviceIndex 0) of interfaceType 'interface'",
            )
            .cel(
                "self.all(x, self.exists_one(y, (has(x.networkCardIndex) ? x.networkCardIndex : 0) == (has(y.networkCardIndex) ? y.networkCardIndex : 0) && (has(x.deviceIndex) ? x.deviceIndex : 0) == (has(y.deviceIndex) ? y.deviceIndex : 0)))",
                "networkCardIndex/deviceIndex combinations must be unique",
            )
            .cel(
                "self.all(x, x.interfaceType != 'efa-only' || self.exists_one(y, y.interfaceType == 'efa-only' && (has(x.networkCardIndex) ? x.networkCardIndex : 0) == (has(y.networkCardIndex) ? y.networkCardIndex : 0)))",
                "a network card can have at most one efa-only interface",
            )
            .desc("Network interfaces of the nodes (multi-card and EFA layouts)."),
        ),
        (
            "placementGroupSelector",
            S::object(vec![
                ("id", S::string().pattern("^pg-[0-9a-z]+$").desc("Placement group id.")),
                (
                    "name",
                    S::string()
                        .set("minLength", json!(1))
                        .desc("Placement group name."),
                ),
            ])
            .cel(
                "has(self.name) != has(self.id)",
                "expected exactly one of ['name', 'id']",
            )
            .desc("The placement group the nodes launch into."),
        ),
        (
            "role",
            S::string()
                .cel("self != ''", "role cannot be empty")
                .desc("IAM role of the nodes; karp manages an instance profile for it."),
        ),
        ("securityGroupSelectorTerms", sg_terms),
        ("subnetSelectorTerms", subnet_terms),
        (
            "tags",
            S::map(S::string())
                .cel(
                    "self.all(k, k != 'eks:eks-cluster-name')",
                    "tag contains a restricted tag matching eks:eks-cluster-name",
                )
                .cel(
                    "self.all(k, !k.startsWith('kubernetes.io/cluster') )",
                    "tag contains a restricted tag matching kubernetes.io/cluster/",
                )
                .cel(
                    "self.all(k, k != 'karpenter.sh/nodepool')",
                    "tag contains a restricted tag matching karpenter.sh/nodepool",
                )
                .cel(
                    "self.all(k, k !='karpenter.sh/nodeclaim')",
                    "tag contains a restricted tag matching karpenter.sh/nodeclaim",
                )
                .cel(
                    "self.all(k, k !='karpenter.k8s.aws/ec2nodeclass')",
                    "tag contains a restricted tag matching karpenter.k8s.aws/ec2nodeclass",
                )
                .desc("Tags on every resource karp creates for this class."),
        ),
        ("userData", S::string().desc("User data merged with karp's bootstrap.")),
    ])
    .required(&["amiSelectorTerms", "securityGroupSelectorTerms", "subnetSelectorTerms"])
    .cel(
        "has(self.role) != has(self.instanceProfile)",
        "must specify exactly one of ['role', 'instanceProfile']",
    )
    .cel(
        "(has(oldSelf.role) && has(self.role)) || (has(oldSelf.instanceProfile) && has(self.instanceProfile))",
        "changing from 'instanceProfile' to 'role' is not supported. You must delete and recreate this node class if you want to change this.",
    )
    .cel(
        "has(self.amiFamily) || self.amiSelectorTerms.exists(x, has(x.alias))",
        "amiFamily is required if amiSelectorTerms does not specify an alias",
    )
    .desc("AWS configuration of nodes.");
    let status = S::object(vec![
        (
            "amis",
            S::array(
                S::object(vec![
                    ("deprecated", S::boolean()),
                    ("id", S::string().pattern("ami-[0-9a-z]+")),
                    ("name", S::string()),
                    (
                        "requirements",
                        S::array(
                            S::object(vec![
                                ("key", S::string()),
                                ("operator", S::string()),
                                ("values", S::array(S::string())),
                            ])
                            .required(&["key", "operator"]),
                        ),
                    ),
                ])
                .required(&["id", "requirements"]),
            )
            .desc("Resolved AMIs."),
        ),
        (
            "capacityReservations",
            S::array(
                S::object(vec![
                    ("availabilityZone", S::string()),
                    ("endTime", S::string().set("format", json!("date-time"))),
                    ("id", S::string().pattern("^cr-[0-9a-z]+$")),
                    (
                        "instanceMatchCriteria",
                        S::enumeration(&["open", "targeted"]),
                    ),
                    ("instanceType", S::string()),
                    ("ownerID", S::string().pattern(r"^[0-9]{12}$")),
                    (
                        "reservationType",
                        S::enumeration(&["default", "capacity-block"]).default(json!("default")),
                    ),
                    (
                        "state",
                        S::enumeration(&["active", "expiring"]).default(json!("active")),
                    ),
                ])
                .required(&[
                    "availabilityZone",
                    "id",
                    "instanceMatchCriteria",
                    "instanceType",
                    "ownerID",
                ]),
            )
            .desc("Resolved capacity reservations."),
        ),
        ("conditions", conditions()),
        (
            "instanceProfile",
            S::string().desc("Resolved instance profile."),
        ),
        (
            "placementGroups",
            S::array(
                S::object(vec![
                    ("id", S::string()),
                    ("name", S::string()),
                    ("partitionCount", S::integer().set("format", json!("int32"))),
                    ("spreadLevel", S::string()),
                    ("state", S::string()),
                    (
                        "strategy",
                        S::enumeration(&["cluster", "partition", "spread"]),
                    ),
                ])
                .required(&["id", "name", "state", "strategy"]),
            )
            .desc("The resolved placement group."),
        ),
        (
            "securityGroups",
            S::array(S::object(vec![("id", S::string()), ("name", S::string())]).required(&["id"]))
                .desc("Resolved security groups."),
        ),
        (
            "subnets",
            S::array(
                S::object(vec![
                    ("id", S::string()),
                    ("zone", S::string()),
                    ("zoneID", S::string()),
                ])
                .required(&["id", "zone"]),
            )
            .desc("Resolved subnets."),
        ),
    ])
    .desc("The resolved state of the node class.");
    let columns = json!([
        {"jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "name": "Ready", "type": "string"},
        {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        {"jsonPath": ".spec.role", "name": "Role", "priority": 1, "type": "string"}
    ]);
    crd(
        &Names {
            group: "karpenter.k8s.aws",
            kind: "EC2NodeClass",
            plural: "ec2nodeclasses",
            short_names: &["ec2nc", "ec2ncs"],
        },
        columns,
        spec,
        status,
        vec![(
            "self.metadata.name.size() <= 63",
            "name must be no more than 63 characters",
        )],
    )
}

/// Every CRD, in install order.
#[must_use]
pub fn all() -> Vec<Value> {
    vec![nodepool_crd(), nodeclaim_crd(), ec2nodeclass_crd()]
}

/// A JSON value as YAML with object keys sorted, whatever map type serde_json was built with
/// (its `preserve_order` feature may be enabled by other crates in the build).
fn sorted_yaml(v: &Value) -> serde_yaml::Value {
    match v {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::Number(n) => serde_yaml::to_value(n).unwrap_or(serde_yaml::Value::Null),
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Array(a) => serde_yaml::Value::Sequence(a.iter().map(sorted_yaml).collect()),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let mut m = serde_yaml::Mapping::new();
            for k in keys {
                m.insert(serde_yaml::Value::String(k.clone()), sorted_yaml(&o[k]));
            }
            serde_yaml::Value::Mapping(m)
        }
    }
}

/// One CRD as a YAML document (keys sorted, so the output is stable).
#[must_use]
pub fn to_yaml(crd: &Value) -> String {
    serde_yaml::to_string(&sorted_yaml(crd)).unwrap_or_default()
}

/// The file name a CRD is committed under in `charts/karp/crds/` (`karpenter.sh_nodepools.yaml`).
#[must_use]
pub fn file_name(crd: &Value) -> String {
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    format!("{group}_{plural}.yaml")
}

/// All CRDs as one multi-document YAML stream (what `karp crds` prints).
#[must_use]
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|c| format!("---\n{}", to_yaml(c)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(crd: &Value) -> &Value {
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    }

    #[test]
    fn nodepool_schema_has_karpenters_defaults_and_rules() {
        let c = nodepool_crd();
        assert_eq!(c["metadata"]["name"], "nodepools.karpenter.sh");
        assert_eq!(c["spec"]["scope"], "Cluster");
        let spec = &schema(&c)["properties"]["spec"];
        assert_eq!(
            spec["properties"]["disruption"]["properties"]["consolidationPolicy"]["default"],
            "WhenEmptyOrUnderutilized"
        );
        let disruption = &spec["properties"]["disruption"];
        assert_eq!(
            disruption["properties"]["consolidationPolicy"]["enum"],
            json!(["WhenEmpty", "WhenEmptyOrUnderutilized", "Balanced"])
        );
        let k = &disruption["properties"]["consolidationThreshold"];
        assert_eq!((&k["minimum"], &k["maximum"]), (&json!(1), &json!(3)));
        assert!(disruption["x-kubernetes-validations"]
            .to_string()
            .contains("consolidationThreshold is only valid when consolidationPolicy is Balanced"));
        assert_eq!(
            spec["properties"]["template"]["properties"]["spec"]["properties"]["expireAfter"]
                ["default"],
            "720h"
        );
        let reqs =
            &spec["properties"]["template"]["properties"]["spec"]["properties"]["requirements"];
        assert_eq!(
            reqs["x-kubernetes-validations"].as_array().unwrap().len(),
            3
        );
        let cols = c["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap();
        assert_eq!(cols[0]["name"], "NodeClass");
        assert_eq!(
            c["spec"]["versions"][0]["subresources"]["status"],
            json!({})
        );
    }

    #[test]
    fn ec2nodeclass_requires_selectors_and_one_identity() {
        let c = ec2nodeclass_crd();
        let spec = &schema(&c)["properties"]["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            required,
            vec![
                "amiSelectorTerms",
                "securityGroupSelectorTerms",
                "subnetSelectorTerms"
            ]
        );
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(rules.contains(&"has(self.role) != has(self.instanceProfile)"));
        assert_eq!(c["spec"]["names"]["shortNames"], json!(["ec2nc", "ec2ncs"]));
    }

    #[test]
    fn yaml_round_trips_and_names_files() {
        for c in all() {
            let back: Value = serde_yaml::from_str(&to_yaml(&c)).unwrap();
            assert_eq!(back, c);
        }
        assert_eq!(file_name(&nodeclaim_crd()), "karpenter.sh_nodeclaims.yaml");
        assert_eq!(all_yaml().matches("---\n").count(), 3);
    }
}
