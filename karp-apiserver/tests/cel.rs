//! The `x-kubernetes-validations` CEL rules of karp's CRDs (`charts/karp/crds`), through the HTTP
//! API and through kubectl: for every rule, one manifest that satisfies it is accepted and one
//! that breaks it is refused with 422 `Invalid` and kube-apiserver's message (as kubectl prints
//! it). A test keeps the table complete.

use std::collections::BTreeSet;

use karp_apiserver::{ApiServer, Gvr};
use serde_json::{json, Value};

const CRDS: [&str; 3] = [
    include_str!("../../charts/karp/crds/karpenter.sh_nodepools.yaml"),
    include_str!("../../charts/karp/crds/karpenter.sh_nodeclaims.yaml"),
    include_str!("../../charts/karp/crds/karpenter.k8s.aws_ec2nodeclasses.yaml"),
];

fn server_with_crds() -> ApiServer {
    let server = ApiServer::new();
    for text in CRDS {
        let crd: Value = serde_yaml::from_str(text).expect("CRD YAML");
        server
            .apply(crd)
            .expect("the CRD and its rules are accepted");
    }
    server
}

/// A request through the server's HTTP handler: (status code, body).
async fn request(server: &ApiServer, method: &str, uri: &str, body: &Value) -> (u16, Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap();
    let resp = server.clone().oneshot(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    NodePool,
    NodeClaim,
    EC2NodeClass,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NodePool => "NodePool",
            Kind::NodeClaim => "NodeClaim",
            Kind::EC2NodeClass => "EC2NodeClass",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::NodePool | Kind::NodeClaim => "karpenter.sh",
            Kind::EC2NodeClass => "karpenter.k8s.aws",
        }
    }

    fn collection(self) -> String {
        let plural = match self {
            Kind::NodePool => "nodepools",
            Kind::NodeClaim => "nodeclaims",
            Kind::EC2NodeClass => "ec2nodeclasses",
        };
        format!("/apis/{}/v1/{plural}", self.group())
    }

    fn of(crd_kind: &str) -> Kind {
        match crd_kind {
            "NodePool" => Kind::NodePool,
            "NodeClaim" => Kind::NodeClaim,
            "EC2NodeClass" => Kind::EC2NodeClass,
            other => panic!("unexpected CRD kind {other}"),
        }
    }

    /// A valid object of the kind, before a case changes it.
    fn base(self, name: &str) -> Value {
        let node_class_ref =
            json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"});
        match self {
            Kind::NodePool => json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                "metadata": {"name": name},
                "spec": {"template": {"spec": {"nodeClassRef": node_class_ref,
                    "requirements": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]}}}}),
            // As the operator writes claims: the pool's requirement included.
            Kind::NodeClaim => json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": "default"}},
                "spec": {"nodeClassRef": node_class_ref,
                    "requirements": [
                        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["default"]},
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large", "m5.xlarge"]}]}}),
            Kind::EC2NodeClass => {
                json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass",
                "metadata": {"name": name},
                "spec": {"role": "KarpenterNodeRole",
                    "amiSelectorTerms": [{"alias": "al2023@latest"}],
                    "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
                    "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}]}})
            }
        }
    }
}

/// Changes to a base object: JSON pointer and new value (`null` removes the field).
type Edits = Vec<(&'static str, Value)>;

fn edit(mut obj: Value, edits: &Edits) -> Value {
    for (pointer, value) in edits {
        let (parent, last) = pointer.rsplit_once('/').expect("a JSON pointer");
        let mut cur = &mut obj;
        for seg in parent.split('/').filter(|s| !s.is_empty()) {
            cur = match cur {
                Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
                Value::Object(m) => m.entry(seg).or_insert_with(|| json!({})),
                other => panic!("cannot descend into {other} at {pointer}"),
            };
        }
        match (cur, value) {
            (Value::Object(m), Value::Null) => {
                m.remove(last);
            }
            (Value::Object(m), v) => {
                m.insert(last.to_string(), v.clone());
            }
            (Value::Array(a), v) => a[last.parse::<usize>().unwrap()] = v.clone(),
            (other, _) => panic!("cannot edit {pointer} in {other}"),
        }
    }
    obj
}

/// One rule: where it is declared, its text, a valid and an invalid object (as edits of the kind's
/// base object) and the error the invalid one gets (`<field>: <body>`, as in kube's message).
struct Case {
    kind: Kind,
    /// The schema node that declares the rule (`spec.requirements[*].key`; `[*]` for items and
    /// map values; empty for the root).
    at: &'static str,
    rule: &'static str,
    /// For transition rules: the object is created with these edits, then updated.
    before: Option<Edits>,
    valid: Edits,
    invalid: Edits,
    error: &'static str,
}

fn case(
    kind: Kind,
    at: &'static str,
    rule: &'static str,
    valid: Edits,
    invalid: Edits,
    error: &'static str,
) -> Case {
    Case {
        kind,
        at,
        rule,
        before: None,
        valid,
        invalid,
        error,
    }
}

fn transition(
    kind: Kind,
    at: &'static str,
    rule: &'static str,
    before: Edits,
    valid: Edits,
    invalid: Edits,
    error: &'static str,
) -> Case {
    Case {
        kind,
        at,
        rule,
        before: Some(before),
        valid,
        invalid,
        error,
    }
}

const K8S_LABELS: &str = r#"["beta.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region", "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/zone", "topology.kubernetes.io/region", "node.kubernetes.io/instance-type", "kubernetes.io/arch", "kubernetes.io/os", "node.kubernetes.io/windows-build"]"#;

/// The label-key rules (a key, `self`), shared by NodePool and NodeClaim requirements.
fn key_rules(kind: Kind, at: &'static str, pointer: &'static str, field: &str) -> Vec<Case> {
    let key = |k: &str| vec![(pointer, json!(k))];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut cases = vec![
        case(
            kind,
            at,
            leak(format!(
                r#"self in {K8S_LABELS} || self.find("^([^/]+)").endsWith("node.kubernetes.io") || self.find("^([^/]+)").endsWith("node-restriction.kubernetes.io") || !self.find("^([^/]+)").endsWith("kubernetes.io")"#
            )),
            key("node.kubernetes.io/instance-type"),
            key("kubernetes.io/role"),
            leak(format!(
                r#"{field}: Invalid value: "string": label domain "kubernetes.io" is restricted"#
            )),
        ),
        case(
            kind,
            at,
            r#"self.find("^([^/]+)").endsWith("kops.k8s.io") || !self.find("^([^/]+)").endsWith("k8s.io")"#,
            key("kops.k8s.io/instancegroup"),
            key("k8s.io/role"),
            leak(format!(
                r#"{field}: Invalid value: "string": label domain "k8s.io" is restricted"#
            )),
        ),
        case(
            kind,
            at,
            r#"self in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"] || !self.find("^([^/]+)").endsWith("karpenter.sh")"#,
            key("karpenter.sh/capacity-type"),
            key("karpenter.sh/team"),
            leak(format!(
                r#"{field}: Invalid value: "string": label domain "karpenter.sh" is restricted"#
            )),
        ),
        case(
            kind,
            at,
            r#"self != "kubernetes.io/hostname""#,
            key("kubernetes.io/os"),
            key("kubernetes.io/hostname"),
            leak(format!(
                r#"{field}: Invalid value: "string": label "kubernetes.io/hostname" is restricted"#
            )),
        ),
        case(
            kind,
            at,
            r#"self in ["karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported", "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor", "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation", "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size", "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory", "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth", "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory", "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer", "karpenter.k8s.aws/instance-accelerator-count"] || !self.find("^([^/]+)").endsWith("karpenter.k8s.aws")"#,
            key("karpenter.k8s.aws/instance-family"),
            key("karpenter.k8s.aws/instance-color"),
            leak(format!(
                r#"{field}: Invalid value: "string": label domain "karpenter.k8s.aws" is restricted"#
            )),
        ),
    ];
    if kind == Kind::NodePool {
        cases.push(case(
            kind,
            at,
            r#"self != "karpenter.sh/nodepool""#,
            key("team"),
            key("karpenter.sh/nodepool"),
            leak(format!(
                r#"{field}: Invalid value: "string": label "karpenter.sh/nodepool" is restricted"#
            )),
        ));
    }
    cases
}

/// The requirement-list rules, shared by NodePool and NodeClaim.
fn requirement_rules(
    kind: Kind,
    at: &'static str,
    pointer: &'static str,
    field: &str,
) -> Vec<Case> {
    let reqs = |r: Value| vec![(pointer, r)];
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        case(kind, at, "self.all(x, x.operator == 'In' ? x.values.size() != 0 : true)",
            reqs(json!([{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "Exists"}])),
            reqs(json!([{"key": "karpenter.sh/capacity-type", "operator": "In", "values": []}])),
            leak(format!(r#"{field}: Invalid value: "array": requirements with operator 'In' must have a value defined"#))),
        case(kind, at, "self.all(x, (x.operator == 'Gt' || x.operator == 'Lt') ? (x.values.size() == 1 && int(x.values[0]) >= 0) : true)",
            reqs(json!([{"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["4"]}])),
            reqs(json!([{"key": "karpenter.k8s.aws/instance-generation", "operator": "Lt", "values": ["-1"]}])),
            leak(format!(r#"{field}: Invalid value: "array": requirements operator 'Gt' or 'Lt' must have a single positive integer value"#))),
        case(kind, at, "self.all(x, (x.operator == 'In' && has(x.minValues)) ? x.values.size() >= x.minValues : true)",
            reqs(json!([{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["m5", "c5"], "minValues": 2}])),
            reqs(json!([{"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["m5", "c5"], "minValues": 3}])),
            leak(format!(r#"{field}: Invalid value: "array": requirements with 'minValues' must have at least that many values specified in the 'values' field"#))),
    ]
}

/// The label-map rules of a NodePool template (`self.all(x, …)` over the keys).
fn label_map_rules() -> Vec<Case> {
    let at = "spec.template.metadata.labels";
    let labels = |k: &str| vec![("/spec/template/metadata/labels", json!({ k: "x" }))];
    let np = Kind::NodePool;
    vec![
        case(
            np,
            at,
            r#"self.all(x, x in ["beta.kubernetes.io/instance-type", "failure-domain.beta.kubernetes.io/region", "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "failure-domain.beta.kubernetes.io/zone", "topology.kubernetes.io/zone", "topology.kubernetes.io/region", "kubernetes.io/arch", "kubernetes.io/os", "node.kubernetes.io/windows-build"] || x.find("^([^/]+)").endsWith("node.kubernetes.io") || x.find("^([^/]+)").endsWith("node-restriction.kubernetes.io") || !x.find("^([^/]+)").endsWith("kubernetes.io"))"#,
            labels("node-restriction.kubernetes.io/team"),
            labels("kubernetes.io/team"),
            r#"spec.template.metadata.labels: Invalid value: "object": label domain "kubernetes.io" is restricted"#,
        ),
        case(
            np,
            at,
            r#"self.all(x, x.find("^([^/]+)").endsWith("kops.k8s.io") || !x.find("^([^/]+)").endsWith("k8s.io"))"#,
            labels("kops.k8s.io/instancegroup"),
            labels("example.k8s.io/team"),
            r#"spec.template.metadata.labels: Invalid value: "object": label domain "k8s.io" is restricted"#,
        ),
        case(
            np,
            at,
            r#"self.all(x, x in ["karpenter.sh/capacity-type", "karpenter.sh/nodepool"] || !x.find("^([^/]+)").endsWith("karpenter.sh"))"#,
            labels("karpenter.sh/capacity-type"),
            labels("karpenter.sh/team"),
            r#"spec.template.metadata.labels: Invalid value: "object": label domain "karpenter.sh" is restricted"#,
        ),
        case(
            np,
            at,
            r#"self.all(x, x != "karpenter.sh/nodepool")"#,
            labels("team"),
            labels("karpenter.sh/nodepool"),
            r#"spec.template.metadata.labels: Invalid value: "object": label "karpenter.sh/nodepool" is restricted"#,
        ),
        case(
            np,
            at,
            r#"self.all(x, x != "kubernetes.io/hostname")"#,
            labels("kubernetes.io/os"),
            labels("kubernetes.io/hostname"),
            r#"spec.template.metadata.labels: Invalid value: "object": label "kubernetes.io/hostname" is restricted"#,
        ),
        case(
            np,
            at,
            r#"self.all(x, x in ["karpenter.k8s.aws/ec2nodeclass", "karpenter.k8s.aws/instance-encryption-in-transit-supported", "karpenter.k8s.aws/instance-category", "karpenter.k8s.aws/instance-hypervisor", "karpenter.k8s.aws/instance-family", "karpenter.k8s.aws/instance-generation", "karpenter.k8s.aws/instance-local-nvme", "karpenter.k8s.aws/instance-size", "karpenter.k8s.aws/instance-cpu", "karpenter.k8s.aws/instance-cpu-manufacturer", "karpenter.k8s.aws/instance-cpu-sustained-clock-speed-mhz", "karpenter.k8s.aws/instance-memory", "karpenter.k8s.aws/instance-ebs-bandwidth", "karpenter.k8s.aws/instance-network-bandwidth", "karpenter.k8s.aws/instance-gpu-name", "karpenter.k8s.aws/instance-gpu-manufacturer", "karpenter.k8s.aws/instance-gpu-count", "karpenter.k8s.aws/instance-gpu-memory", "karpenter.k8s.aws/instance-accelerator-name", "karpenter.k8s.aws/instance-accelerator-manufacturer", "karpenter.k8s.aws/instance-accelerator-count"] || !x.find("^([^/]+)").endsWith("karpenter.k8s.aws"))"#,
            labels("karpenter.k8s.aws/instance-family"),
            labels("karpenter.k8s.aws/instance-color"),
            r#"spec.template.metadata.labels: Invalid value: "object": label domain "karpenter.k8s.aws" is restricted"#,
        ),
    ]
}

fn nodepool_cases() -> Vec<Case> {
    let np = Kind::NodePool;
    let mut cases = vec![
        transition(
            np,
            "spec",
            "has(self.replicas) == has(oldSelf.replicas)",
            vec![],
            vec![("/spec/weight", json!(5))],
            vec![("/spec/replicas", json!(3))],
            r#"spec: Invalid value: "object": Cannot transition NodePool between static (replicas set) and dynamic (replicas unset) provisioning modes"#,
        ),
        case(
            np,
            "spec",
            "!has(self.replicas) || (!has(self.limits) || size(self.limits) == 0 || (size(self.limits) == 1 && 'nodes' in self.limits))",
            vec![
                ("/spec/replicas", json!(2)),
                ("/spec/limits", json!({"nodes": 4})),
            ],
            vec![
                ("/spec/replicas", json!(2)),
                ("/spec/limits", json!({"cpu": "100", "nodes": 4})),
            ],
            r#"spec: Invalid value: "object": only 'limits.nodes' is supported on static NodePools"#,
        ),
        case(
            np,
            "spec",
            "!has(self.replicas) || !has(self.weight)",
            vec![("/spec/replicas", json!(2))],
            vec![("/spec/replicas", json!(2)), ("/spec/weight", json!(10))],
            r#"spec: Invalid value: "object": 'weight' is not supported on static NodePools"#,
        ),
        case(
            np,
            "spec.disruption",
            "!has(self.consolidationThreshold) || self.consolidationPolicy == 'Balanced'",
            vec![(
                "/spec/disruption",
                json!({"consolidateAfter": "0s", "consolidationPolicy": "Balanced", "consolidationThreshold": 2}),
            )],
            vec![(
                "/spec/disruption",
                json!({"consolidateAfter": "0s", "consolidationThreshold": 2}),
            )],
            r#"spec.disruption: Invalid value: "object": consolidationThreshold is only valid when consolidationPolicy is Balanced"#,
        ),
        case(
            np,
            "spec.disruption.budgets",
            "self.all(x, has(x.schedule) == has(x.duration))",
            vec![(
                "/spec/disruption",
                json!({"consolidateAfter": "0s", "budgets": [{"nodes": "10%", "schedule": "@daily", "duration": "10m"}, {"nodes": "1"}]}),
            )],
            vec![(
                "/spec/disruption",
                json!({"consolidateAfter": "0s", "budgets": [{"nodes": "10%", "schedule": "@daily"}]}),
            )],
            r#"spec.disruption.budgets: Invalid value: "array": 'schedule' must be set with 'duration'"#,
        ),
        transition(
            np,
            "spec.template.spec.nodeClassRef",
            "self.group == oldSelf.group",
            vec![],
            vec![("/spec/template/spec/nodeClassRef/name", json!("other"))],
            vec![(
                "/spec/template/spec/nodeClassRef/group",
                json!("example.com"),
            )],
            r#"spec.template.spec.nodeClassRef: Invalid value: "object": nodeClassRef.group is immutable"#,
        ),
        transition(
            np,
            "spec.template.spec.nodeClassRef",
            "self.kind == oldSelf.kind",
            vec![],
            vec![("/spec/template/spec/nodeClassRef/name", json!("other"))],
            vec![(
                "/spec/template/spec/nodeClassRef/kind",
                json!("OtherNodeClass"),
            )],
            r#"spec.template.spec.nodeClassRef: Invalid value: "object": nodeClassRef.kind is immutable"#,
        ),
        case(
            np,
            "spec.template.spec.nodeClassRef.group",
            "self != ''",
            vec![(
                "/spec/template/spec/nodeClassRef/group",
                json!("karpenter.k8s.aws"),
            )],
            vec![("/spec/template/spec/nodeClassRef/group", json!(""))],
            r#"spec.template.spec.nodeClassRef.group: Invalid value: "string": group may not be empty"#,
        ),
        case(
            np,
            "spec.template.spec.nodeClassRef.kind",
            "self != ''",
            vec![(
                "/spec/template/spec/nodeClassRef/kind",
                json!("EC2NodeClass"),
            )],
            vec![("/spec/template/spec/nodeClassRef/kind", json!(""))],
            r#"spec.template.spec.nodeClassRef.kind: Invalid value: "string": kind may not be empty"#,
        ),
        case(
            np,
            "spec.template.spec.nodeClassRef.name",
            "self != ''",
            vec![("/spec/template/spec/nodeClassRef/name", json!("default"))],
            vec![("/spec/template/spec/nodeClassRef/name", json!(""))],
            r#"spec.template.spec.nodeClassRef.name: Invalid value: "string": name may not be empty"#,
        ),
    ];
    cases.extend(label_map_rules());
    cases.extend(requirement_rules(
        np,
        "spec.template.spec.requirements",
        "/spec/template/spec/requirements",
        "spec.template.spec.requirements",
    ));
    cases.extend(key_rules(
        np,
        "spec.template.spec.requirements[*].key",
        "/spec/template/spec/requirements/0/key",
        "spec.template.spec.requirements[0].key",
    ));
    cases
}

fn nodeclaim_cases() -> Vec<Case> {
    let nc = Kind::NodeClaim;
    let mut cases = vec![
        transition(
            nc,
            "spec",
            "self == oldSelf",
            vec![],
            vec![(
                "/metadata/labels",
                json!({"karpenter.sh/nodepool": "default", "team": "a"}),
            )],
            vec![("/spec/requirements/1/values", json!(["m5.large"]))],
            r#"spec: Invalid value: "object": spec is immutable"#,
        ),
        case(
            nc,
            "spec.nodeClassRef.group",
            "self != ''",
            vec![("/spec/nodeClassRef/group", json!("karpenter.k8s.aws"))],
            vec![("/spec/nodeClassRef/group", json!(""))],
            r#"spec.nodeClassRef.group: Invalid value: "string": group may not be empty"#,
        ),
        case(
            nc,
            "spec.nodeClassRef.kind",
            "self != ''",
            vec![("/spec/nodeClassRef/kind", json!("EC2NodeClass"))],
            vec![("/spec/nodeClassRef/kind", json!(""))],
            r#"spec.nodeClassRef.kind: Invalid value: "string": kind may not be empty"#,
        ),
        case(
            nc,
            "spec.nodeClassRef.name",
            "self != ''",
            vec![("/spec/nodeClassRef/name", json!("default"))],
            vec![("/spec/nodeClassRef/name", json!(""))],
            r#"spec.nodeClassRef.name: Invalid value: "string": name may not be empty"#,
        ),
    ];
    cases.extend(requirement_rules(
        nc,
        "spec.requirements",
        "/spec/requirements",
        "spec.requirements",
    ));
    cases.extend(key_rules(
        nc,
        "spec.requirements[*].key",
        "/spec/requirements/1/key",
        "spec.requirements[1].key",
    ));
    cases
}

fn ec2nodeclass_cases() -> Vec<Case> {
    let ec2 = Kind::EC2NodeClass;
    let tags_rule = "self.all(k, k != '' && self[k] != '')";
    let reserved_keys =
        "self.all(x, x=='cpu' || x=='memory' || x=='ephemeral-storage' || x=='pid')";
    let negative = "self.all(x, !self[x].startsWith('-'))";
    let eviction_keys = "self.all(x, x in ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available'])";
    let ami = |terms: Value| {
        vec![
            ("/spec/amiFamily", json!("AL2023")),
            ("/spec/amiSelectorTerms", terms),
        ]
    };
    let kubelet = |k: Value| vec![("/spec/kubelet", k)];
    let sg = |t: Value| vec![("/spec/securityGroupSelectorTerms", t)];
    let subnets = |t: Value| vec![("/spec/subnetSelectorTerms", t)];
    let tag = |k: &str| vec![("/spec/tags", json!({ k: "x" }))];
    vec![
        case(ec2, "", "self.metadata.name.size() <= 63",
            vec![("/metadata/name", json!("a".repeat(63)))],
            vec![("/metadata/name", json!("a".repeat(64)))],
            r#"<nil>: Invalid value: "object": name must be no more than 63 characters"#),
        case(ec2, "spec", "has(self.role) != has(self.instanceProfile)",
            vec![("/spec/role", Value::Null), ("/spec/instanceProfile", json!("KarpenterProfile"))],
            vec![("/spec/instanceProfile", json!("KarpenterProfile"))],
            r#"spec: Invalid value: "object": must specify exactly one of ['role', 'instanceProfile']"#),
        transition(ec2, "spec", "(has(oldSelf.role) && has(self.role)) || (has(oldSelf.instanceProfile) && has(self.instanceProfile))",
            vec![("/spec/role", Value::Null), ("/spec/instanceProfile", json!("KarpenterProfile"))],
            vec![("/spec/instanceProfile", json!("OtherProfile"))],
            vec![("/spec/instanceProfile", Value::Null), ("/spec/role", json!("KarpenterNodeRole"))],
            r#"spec: Invalid value: "object": changing from 'instanceProfile' to 'role' is not supported. You must delete and recreate this node class if you want to change this."#),
        case(ec2, "spec", "has(self.amiFamily) || self.amiSelectorTerms.exists(x, has(x.alias))",
            ami(json!([{"id": "ami-0123456789abcdef0"}])),
            vec![("/spec/amiSelectorTerms", json!([{"id": "ami-0123456789abcdef0"}]))],
            r#"spec: Invalid value: "object": amiFamily is required if amiSelectorTerms does not specify an alias"#),
        case(ec2, "spec.amiSelectorTerms", "self.all(x, has(x.tags) || has(x.id) || has(x.name) || has(x.alias) || has(x.ssmParameter))",
            ami(json!([{"name": "my-ami-*", "owner": "self"}])),
            ami(json!([{"owner": "self"}])),
            r#"spec.amiSelectorTerms: Invalid value: "array": expected at least one, got none, ['tags', 'id', 'name', 'alias', 'ssmParameter']"#),
        case(ec2, "spec.amiSelectorTerms", "!self.exists(x, has(x.id) && (has(x.alias) || has(x.tags) || has(x.name) || has(x.owner)))",
            ami(json!([{"id": "ami-0123456789abcdef0"}, {"name": "my-ami-*"}])),
            ami(json!([{"id": "ami-0123456789abcdef0", "name": "my-ami-*"}])),
            r#"spec.amiSelectorTerms: Invalid value: "array": 'id' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"#),
        case(ec2, "spec.amiSelectorTerms", "!self.exists(x, has(x.alias) && (has(x.id) || has(x.tags) || has(x.name) || has(x.owner)))",
            ami(json!([{"alias": "bottlerocket@latest"}])),
            ami(json!([{"alias": "al2023@latest", "owner": "self"}])),
            r#"spec.amiSelectorTerms: Invalid value: "array": 'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"#),
        case(ec2, "spec.amiSelectorTerms", "!(self.exists(x, has(x.alias)) && self.size() != 1)",
            ami(json!([{"alias": "al2023@v20240807"}])),
            ami(json!([{"alias": "al2023@latest"}, {"name": "my-ami-*"}])),
            r#"spec.amiSelectorTerms: Invalid value: "array": 'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms"#),
        case(ec2, "spec.amiSelectorTerms[*].alias", "self.matches('^[a-zA-Z0-9]+@.+$')",
            vec![("/spec/amiSelectorTerms/0/alias", json!("al2@latest"))],
            vec![("/spec/amiSelectorTerms/0/alias", json!("al2023"))],
            r#"spec.amiSelectorTerms[0].alias: Invalid value: "string": 'alias' is improperly formatted, must match the format 'family@version'"#),
        case(ec2, "spec.amiSelectorTerms[*].alias", "self.split('@')[0] in ['al2','al2023','bottlerocket','windows2019','windows2022','windows2025']",
            vec![("/spec/amiSelectorTerms/0/alias", json!("bottlerocket@v1.20.0"))],
            vec![("/spec/amiSelectorTerms/0/alias", json!("ubuntu@latest"))],
            r#"spec.amiSelectorTerms[0].alias: Invalid value: "string": family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022', 'windows2025'"#),
        case(ec2, "spec.amiSelectorTerms[*].alias", "self.split('@')[0] in ['windows2019','windows2022','windows2025'] ? self.split('@')[1] == 'latest' : true",
            vec![("/spec/amiSelectorTerms/0/alias", json!("windows2022@latest"))],
            vec![("/spec/amiSelectorTerms/0/alias", json!("windows2022@v1"))],
            r#"spec.amiSelectorTerms[0].alias: Invalid value: "string": windows families may only specify version 'latest'"#),
        case(ec2, "spec.amiSelectorTerms[*].tags", tags_rule,
            ami(json!([{"tags": {"Name": "my-ami"}}])),
            ami(json!([{"tags": {"Name": ""}}])),
            r#"spec.amiSelectorTerms[0].tags: Invalid value: "object": empty tag keys or values aren't supported"#),
        case(ec2, "spec.blockDeviceMappings", "self.filter(x, has(x.rootVolume)?x.rootVolume==true:false).size() <= 1",
            vec![("/spec/blockDeviceMappings", json!([
                {"deviceName": "/dev/xvda", "rootVolume": true, "ebs": {"volumeSize": "20Gi"}},
                {"deviceName": "/dev/xvdb", "rootVolume": false, "ebs": {"volumeSize": "100Gi"}}]))],
            vec![("/spec/blockDeviceMappings", json!([
                {"deviceName": "/dev/xvda", "rootVolume": true, "ebs": {"volumeSize": "20Gi"}},
                {"deviceName": "/dev/xvdb", "rootVolume": true, "ebs": {"volumeSize": "100Gi"}}]))],
            r#"spec.blockDeviceMappings: Invalid value: "array": must have only one blockDeviceMappings with rootVolume"#),
        case(ec2, "spec.blockDeviceMappings[*].ebs", "has(self.snapshotID) || has(self.volumeSize)",
            vec![("/spec/blockDeviceMappings", json!([{"deviceName": "/dev/xvda", "ebs": {"snapshotID": "snap-0123456789abcdef0"}}]))],
            vec![("/spec/blockDeviceMappings", json!([{"deviceName": "/dev/xvda", "ebs": {"encrypted": true}}]))],
            r#"spec.blockDeviceMappings[0].ebs: Invalid value: "object": snapshotID or volumeSize must be defined"#),
        case(ec2, "spec.capacityReservationSelectorTerms[*].tags", tags_rule,
            vec![("/spec/capacityReservationSelectorTerms", json!([{"tags": {"team": "a"}}]))],
            vec![("/spec/capacityReservationSelectorTerms", json!([{"tags": {"team": ""}}]))],
            r#"spec.capacityReservationSelectorTerms[0].tags: Invalid value: "object": empty tag keys or values aren't supported"#),
        case(ec2, "spec.capacityReservationSelectorTerms", "self.all(x, has(x.tags) || has(x.id) || has(x.instanceMatchCriteria))",
            vec![("/spec/capacityReservationSelectorTerms", json!([{"instanceMatchCriteria": "open"}]))],
            vec![("/spec/capacityReservationSelectorTerms", json!([{"ownerID": "123456789012"}]))],
            r#"spec.capacityReservationSelectorTerms: Invalid value: "array": expected at least one, got none, ['tags', 'id', 'instanceMatchCriteria']"#),
        case(ec2, "spec.capacityReservationSelectorTerms", "!self.all(x, has(x.id) && (has(x.tags) || has(x.ownerID) || has(x.instanceMatchCriteria)))",
            vec![("/spec/capacityReservationSelectorTerms", json!([{"id": "cr-0123abcd"}]))],
            vec![("/spec/capacityReservationSelectorTerms", json!([{"id": "cr-0123abcd", "ownerID": "123456789012"}]))],
            r#"spec.capacityReservationSelectorTerms: Invalid value: "array": 'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation selector term"#),
        case(ec2, "spec.connectionTracking", "has(self.tcpEstablishedTimeout) || has(self.udpStreamTimeout) || has(self.udpTimeout)",
            vec![("/spec/connectionTracking", json!({"udpTimeout": 30}))],
            vec![("/spec/connectionTracking", json!({}))],
            r#"spec.connectionTracking: Invalid value: "object": expected at least one, got none, ['tcpEstablishedTimeout', 'udpStreamTimeout', 'udpTimeout']"#),
        case(ec2, "spec.networkInterfaces", "self.exists(x, (has(x.networkCardIndex) ? x.networkCardIndex : 0) == 0 && (has(x.deviceIndex) ? x.deviceIndex : 0) == 0 && x.interfaceType == 'interface')",
            vec![("/spec/networkInterfaces", json!([{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}, {"networkCardIndex": 0, "deviceIndex": 1, "interfaceType": "efa-only"}]))],
            vec![("/spec/networkInterfaces", json!([{"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "efa-only"}]))],
            r#"spec.networkInterfaces: Invalid value: "array": must include a primary interface (networkCardIndex 0, deviceIndex 0) of interfaceType 'interface'"#),
        case(ec2, "spec.networkInterfaces", "self.all(x, self.exists_one(y, (has(x.networkCardIndex) ? x.networkCardIndex : 0) == (has(y.networkCardIndex) ? y.networkCardIndex : 0) && (has(x.deviceIndex) ? x.deviceIndex : 0) == (has(y.deviceIndex) ? y.deviceIndex : 0)))",
            vec![("/spec/networkInterfaces", json!([{"interfaceType": "interface"}, {"networkCardIndex": 1, "interfaceType": "interface"}]))],
            vec![("/spec/networkInterfaces", json!([{"interfaceType": "interface"}, {"networkCardIndex": 0, "deviceIndex": 0, "interfaceType": "interface"}]))],
            r#"spec.networkInterfaces: Invalid value: "array": networkCardIndex/deviceIndex combinations must be unique"#),
        case(ec2, "spec.networkInterfaces", "self.all(x, x.interfaceType != 'efa-only' || self.exists_one(y, y.interfaceType == 'efa-only' && (has(x.networkCardIndex) ? x.networkCardIndex : 0) == (has(y.networkCardIndex) ? y.networkCardIndex : 0)))",
            vec![("/spec/networkInterfaces", json!([{"interfaceType": "interface"}, {"deviceIndex": 1, "interfaceType": "efa-only"}, {"networkCardIndex": 1, "interfaceType": "efa-only"}]))],
            vec![("/spec/networkInterfaces", json!([{"interfaceType": "interface"}, {"deviceIndex": 1, "interfaceType": "efa-only"}, {"deviceIndex": 2, "interfaceType": "efa-only"}]))],
            r#"spec.networkInterfaces: Invalid value: "array": a network card can have at most one efa-only interface"#),
        case(ec2, "spec.placementGroupSelector", "has(self.name) != has(self.id)",
            vec![("/spec/placementGroupSelector", json!({"id": "pg-0123abcd"}))],
            vec![("/spec/placementGroupSelector", json!({"id": "pg-0123abcd", "name": "training"}))],
            r#"spec.placementGroupSelector: Invalid value: "object": expected exactly one of ['name', 'id']"#),
        case(ec2, "spec.instanceProfile", "self != ''",
            vec![("/spec/role", Value::Null), ("/spec/instanceProfile", json!("KarpenterProfile"))],
            vec![("/spec/role", Value::Null), ("/spec/instanceProfile", json!(""))],
            r#"spec.instanceProfile: Invalid value: "string": instanceProfile cannot be empty"#),
        case(ec2, "spec.kubelet", "has(self.evictionSoft) ? has(self.evictionSoftGracePeriod) && self.evictionSoft.all(e, (e in self.evictionSoftGracePeriod)) : true",
            kubelet(json!({"evictionSoft": {"memory.available": "5%"}, "evictionSoftGracePeriod": {"memory.available": "1m"}})),
            kubelet(json!({"evictionSoft": {"memory.available": "5%"}})),
            r#"spec.kubelet: Invalid value: "object": evictionSoft OwnerKey does not have a matching evictionSoftGracePeriod"#),
        case(ec2, "spec.kubelet", "has(self.evictionSoftGracePeriod) ? has(self.evictionSoft) && self.evictionSoftGracePeriod.all(e, (e in self.evictionSoft)) : true",
            kubelet(json!({"evictionSoft": {"nodefs.available": "10%"}, "evictionSoftGracePeriod": {"nodefs.available": "2m"}})),
            kubelet(json!({"evictionSoftGracePeriod": {"nodefs.available": "2m"}})),
            r#"spec.kubelet: Invalid value: "object": evictionSoftGracePeriod OwnerKey does not have a matching evictionSoft"#),
        case(ec2, "spec.kubelet", "has(self.imageGCHighThresholdPercent) && has(self.imageGCLowThresholdPercent) ? self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent : true",
            kubelet(json!({"imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 80})),
            kubelet(json!({"imageGCHighThresholdPercent": 50, "imageGCLowThresholdPercent": 60})),
            r#"spec.kubelet: Invalid value: "object": imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent"#),
        case(ec2, "spec.kubelet.evictionHard", eviction_keys,
            kubelet(json!({"evictionHard": {"memory.available": "100Mi"}})),
            kubelet(json!({"evictionHard": {"memory.free": "100Mi"}})),
            r#"spec.kubelet.evictionHard: Invalid value: "object": valid keys for evictionHard are ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']"#),
        case(ec2, "spec.kubelet.evictionSoft", eviction_keys,
            kubelet(json!({"evictionSoft": {"pid.available": "10%"}, "evictionSoftGracePeriod": {"pid.available": "1m"}})),
            kubelet(json!({"evictionSoft": {"pid.free": "10%"}, "evictionSoftGracePeriod": {"pid.free": "1m"}})),
            r#"spec.kubelet.evictionSoft: Invalid value: "object": valid keys for evictionSoft are ['memory.available','nodefs.available','nodefs.inodesFree','imagefs.available','imagefs.inodesFree','pid.available']"#),
        case(ec2, "spec.kubelet.kubeReserved", reserved_keys,
            kubelet(json!({"kubeReserved": {"cpu": "100m", "memory": "1Gi"}})),
            kubelet(json!({"kubeReserved": {"gpu": "1"}})),
            r#"spec.kubelet.kubeReserved: Invalid value: "object": valid keys for kubeReserved are ['cpu','memory','ephemeral-storage','pid']"#),
        case(ec2, "spec.kubelet.kubeReserved", negative,
            kubelet(json!({"kubeReserved": {"ephemeral-storage": "1Gi"}})),
            kubelet(json!({"kubeReserved": {"cpu": "-100m"}})),
            r#"spec.kubelet.kubeReserved: Invalid value: "object": kubeReserved value cannot be a negative resource quantity"#),
        case(ec2, "spec.kubelet.systemReserved", reserved_keys,
            kubelet(json!({"systemReserved": {"pid": "100"}})),
            kubelet(json!({"systemReserved": {"disk": "1Gi"}})),
            r#"spec.kubelet.systemReserved: Invalid value: "object": valid keys for systemReserved are ['cpu','memory','ephemeral-storage','pid']"#),
        case(ec2, "spec.kubelet.systemReserved", negative,
            kubelet(json!({"systemReserved": {"memory": "512Mi"}})),
            kubelet(json!({"systemReserved": {"memory": "-512Mi"}})),
            r#"spec.kubelet.systemReserved: Invalid value: "object": systemReserved value cannot be a negative resource quantity"#),
        case(ec2, "spec.role", "self != ''",
            vec![("/spec/role", json!("KarpenterNodeRole"))],
            vec![("/spec/role", json!(""))],
            r#"spec.role: Invalid value: "string": role cannot be empty"#),
        case(ec2, "spec.securityGroupSelectorTerms", "self.size() != 0",
            sg(json!([{"id": "sg-0123456789abcdef0"}])),
            sg(json!([])),
            r#"spec.securityGroupSelectorTerms: Invalid value: "array": securityGroupSelectorTerms cannot be empty"#),
        case(ec2, "spec.securityGroupSelectorTerms", "self.all(x, has(x.tags) || has(x.id) || has(x.name))",
            sg(json!([{"name": "my-sg"}])),
            sg(json!([{}])),
            r#"spec.securityGroupSelectorTerms: Invalid value: "array": expected at least one, got none, ['tags', 'id', 'name']"#),
        case(ec2, "spec.securityGroupSelectorTerms", "!self.all(x, has(x.id) && (has(x.tags) || has(x.name)))",
            sg(json!([{"id": "sg-0123456789abcdef0"}, {"tags": {"team": "a"}}])),
            sg(json!([{"id": "sg-0123456789abcdef0", "tags": {"team": "a"}}])),
            r#"spec.securityGroupSelectorTerms: Invalid value: "array": 'id' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term"#),
        case(ec2, "spec.securityGroupSelectorTerms", "!self.all(x, has(x.name) && (has(x.tags) || has(x.id)))",
            sg(json!([{"name": "my-sg"}])),
            sg(json!([{"name": "my-sg", "tags": {"team": "a"}}])),
            r#"spec.securityGroupSelectorTerms: Invalid value: "array": 'name' is mutually exclusive, cannot be set with a combination of other fields in a security group selector term"#),
        case(ec2, "spec.securityGroupSelectorTerms[*].tags", tags_rule,
            sg(json!([{"tags": {"team": "a"}}])),
            sg(json!([{"tags": {"": "a"}}])),
            r#"spec.securityGroupSelectorTerms[0].tags: Invalid value: "object": empty tag keys or values aren't supported"#),
        case(ec2, "spec.subnetSelectorTerms", "self.size() != 0",
            subnets(json!([{"id": "subnet-0123456789abcdef0"}])),
            subnets(json!([])),
            r#"spec.subnetSelectorTerms: Invalid value: "array": subnetSelectorTerms cannot be empty"#),
        case(ec2, "spec.subnetSelectorTerms", "self.all(x, has(x.tags) || has(x.id))",
            subnets(json!([{"tags": {"team": "a"}}])),
            subnets(json!([{}])),
            r#"spec.subnetSelectorTerms: Invalid value: "array": expected at least one, got none, ['tags', 'id']"#),
        case(ec2, "spec.subnetSelectorTerms", "!self.all(x, has(x.id) && has(x.tags))",
            subnets(json!([{"id": "subnet-0123456789abcdef0"}, {"tags": {"team": "a"}}])),
            subnets(json!([{"id": "subnet-0123456789abcdef0", "tags": {"team": "a"}}])),
            r#"spec.subnetSelectorTerms: Invalid value: "array": 'id' is mutually exclusive, cannot be set with a combination of other fields in a subnet selector term"#),
        case(ec2, "spec.subnetSelectorTerms[*].tags", tags_rule,
            subnets(json!([{"tags": {"team": "a"}}])),
            subnets(json!([{"tags": {"team": ""}}])),
            r#"spec.subnetSelectorTerms[0].tags: Invalid value: "object": empty tag keys or values aren't supported"#),
        case(ec2, "spec.tags", "self.all(k, k != 'eks:eks-cluster-name')",
            tag("eks:team"), tag("eks:eks-cluster-name"),
            r#"spec.tags: Invalid value: "object": tag contains a restricted tag matching eks:eks-cluster-name"#),
        case(ec2, "spec.tags", "self.all(k, !k.startsWith('kubernetes.io/cluster') )",
            tag("kubernetes.io/role"), tag("kubernetes.io/cluster/demo"),
            r#"spec.tags: Invalid value: "object": tag contains a restricted tag matching kubernetes.io/cluster/"#),
        case(ec2, "spec.tags", "self.all(k, k != 'karpenter.sh/nodepool')",
            tag("karpenter.sh/discovery"), tag("karpenter.sh/nodepool"),
            r#"spec.tags: Invalid value: "object": tag contains a restricted tag matching karpenter.sh/nodepool"#),
        case(ec2, "spec.tags", "self.all(k, k !='karpenter.sh/nodeclaim')",
            tag("team"), tag("karpenter.sh/nodeclaim"),
            r#"spec.tags: Invalid value: "object": tag contains a restricted tag matching karpenter.sh/nodeclaim"#),
        case(ec2, "spec.tags", "self.all(k, k !='karpenter.k8s.aws/ec2nodeclass')",
            tag("karpenter.k8s.aws/team"), tag("karpenter.k8s.aws/ec2nodeclass"),
            r#"spec.tags: Invalid value: "object": tag contains a restricted tag matching karpenter.k8s.aws/ec2nodeclass"#),
    ]
}

fn all_cases() -> Vec<Case> {
    let mut cases = nodepool_cases();
    cases.extend(nodeclaim_cases());
    cases.extend(ec2nodeclass_cases());
    cases
}

/// Every (kind, schema node, rule) of the CRD files, `[*]` standing for items and map values.
fn crd_rules() -> BTreeSet<(Kind, String, String)> {
    fn walk(kind: Kind, s: &Value, at: &str, out: &mut BTreeSet<(Kind, String, String)>) {
        for r in s["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = r["rule"].as_str().expect("a rule").to_string();
            assert!(
                out.insert((kind, at.to_string(), rule.clone())),
                "{kind:?} {at}: rule declared twice: {rule}"
            );
        }
        for (name, sub) in s["properties"].as_object().into_iter().flatten() {
            let child = if at.is_empty() {
                name.clone()
            } else {
                format!("{at}.{name}")
            };
            walk(kind, sub, &child, out);
        }
        for key in ["items", "additionalProperties"] {
            if s[key].is_object() {
                walk(kind, &s[key], &format!("{at}[*]"), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for text in CRDS {
        let crd: Value = serde_yaml::from_str(text).unwrap();
        let kind = Kind::of(crd["spec"]["names"]["kind"].as_str().unwrap());
        for v in crd["spec"]["versions"].as_array().unwrap() {
            walk(kind, &v["schema"]["openAPIV3Schema"], "", &mut out);
        }
    }
    out
}

#[test]
fn the_table_covers_every_rule_of_the_crds_exactly_once() {
    let in_crds = crd_rules();
    let mut in_table = BTreeSet::new();
    for c in all_cases() {
        assert!(
            in_table.insert((c.kind, c.at.to_string(), c.rule.to_string())),
            "{:?} {}: two cases for the rule {}",
            c.kind,
            c.at,
            c.rule
        );
    }
    let missing: Vec<_> = in_crds.difference(&in_table).collect();
    let unknown: Vec<_> = in_table.difference(&in_crds).collect();
    assert!(missing.is_empty(), "rules without a case: {missing:#?}");
    assert!(
        unknown.is_empty(),
        "cases for rules the CRDs do not have: {unknown:#?}"
    );
    assert_eq!(in_crds.len(), 84, "the three CRDs' rule count changed");
}

/// Creates (or, for transition rules, creates then updates) the object; the Status on failure.
async fn write(server: &ApiServer, c: &Case, name: &str, edits: &Edits) -> (u16, Value) {
    let collection = c.kind.collection();
    let Some(before) = &c.before else {
        return request(server, "POST", &collection, &edit(c.kind.base(name), edits)).await;
    };
    let (code, created) = request(
        server,
        "POST",
        &collection,
        &edit(c.kind.base(name), before),
    )
    .await;
    assert_eq!(
        code, 201,
        "{} {name}: the original is valid: {created}",
        c.rule
    );
    let updated = edit(edit(c.kind.base(name), before), edits);
    request(server, "PUT", &format!("{collection}/{name}"), &updated).await
}

#[tokio::test]
async fn every_rule_accepts_a_valid_object_and_refuses_an_invalid_one_with_kubes_message() {
    let server = server_with_crds();
    let cases = all_cases();
    for (i, c) in cases.iter().enumerate() {
        let what = format!("{:?} {} `{}`", c.kind, c.at, c.rule);
        let valid = format!("valid-{i}");
        let (code, body) = write(&server, c, &valid, &c.valid).await;
        assert!(
            code == 200 || code == 201,
            "{what}: the valid object was refused: {body}"
        );

        let invalid = format!("invalid-{i}");
        let (code, status) = write(&server, c, &invalid, &c.invalid).await;
        assert_eq!(
            code, 422,
            "{what}: the invalid object was not refused: {status}"
        );
        assert_eq!(status["reason"], "Invalid", "{what}: {status}");
        let message = status["message"].as_str().unwrap_or_default();
        let name = edit(c.kind.base(&invalid), &c.invalid)["metadata"]["name"].clone();
        let name = name.as_str().unwrap();
        let prefix = format!(
            "{}.{} \"{name}\" is invalid: ",
            c.kind.name(),
            c.kind.group()
        );
        assert!(message.starts_with(&prefix), "{what}: {message}");
        assert!(
            message.contains(c.error),
            "{what}: expected {:?} in {message:?}",
            c.error
        );
        let (field, body) = c.error.split_once(": ").unwrap();
        let causes = status["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            causes.iter().any(|cause| cause["field"] == field
                && cause["message"] == body
                && cause["reason"] == "FieldValueInvalid"),
            "{what}: no cause {field:?} {body:?} in {causes:?}"
        );
        assert_eq!(status["details"]["kind"], c.kind.name(), "{what}");
        assert_eq!(status["details"]["group"], c.kind.group(), "{what}");
    }
}

#[tokio::test]
async fn one_broken_rule_gives_exactly_kubes_message_and_several_are_listed() {
    let server = server_with_crds();
    let mut np = Kind::NodePool.base("single");
    np["spec"]["template"]["spec"]["nodeClassRef"]["name"] = json!("");
    let (code, status) = request(&server, "POST", &Kind::NodePool.collection(), &np).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        r#"NodePool.karpenter.sh "single" is invalid: spec.template.spec.nodeClassRef.name: Invalid value: "string": name may not be empty"#
    );
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldValueInvalid", "field": "spec.template.spec.nodeClassRef.name",
                "message": "Invalid value: \"string\": name may not be empty"}])
    );

    let mut np = Kind::NodePool.base("double");
    np["spec"]["template"]["spec"]["nodeClassRef"]["name"] = json!("");
    np["spec"]["template"]["spec"]["nodeClassRef"]["kind"] = json!("");
    let (_, status) = request(&server, "POST", &Kind::NodePool.collection(), &np).await;
    assert_eq!(
        status["message"],
        r#"NodePool.karpenter.sh "double" is invalid: [spec.template.spec.nodeClassRef.kind: Invalid value: "string": kind may not be empty, spec.template.spec.nodeClassRef.name: Invalid value: "string": name may not be empty]"#
    );
}

#[tokio::test]
async fn a_rule_that_cannot_be_evaluated_fails_with_the_evaluation_error() {
    let server = server_with_crds();
    let mut np = Kind::NodePool.base("not-a-number");
    np["spec"]["template"]["spec"]["requirements"] = json!([{"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["four"]}]);
    let (code, status) = request(&server, "POST", &Kind::NodePool.collection(), &np).await;
    assert_eq!(code, 422);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with(r#"NodePool.karpenter.sh "not-a-number" is invalid: spec.template.spec.requirements: Invalid value: "array": "#)
            && message.ends_with(" evaluating rule: requirements operator 'Gt' or 'Lt' must have a single positive integer value"),
        "{message}"
    );
}

#[tokio::test]
async fn patches_and_status_writes_are_validated_and_unchanged_invalid_values_ratchet() {
    let server = server_with_crds();
    let np = Kind::NodePool.collection();
    let (code, _) = request(&server, "POST", &np, &Kind::NodePool.base("p")).await;
    assert_eq!(code, 201);
    // A merge patch that breaks a rule is refused; the object is unchanged.
    let patch = json!({"spec": {"template": {"spec": {"nodeClassRef": {"group": "example.com"}}}}});
    let req = |method: &str, uri: String, body: Value, ctype: &'static str| {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let server = server.clone();
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ctype)
            .body(body.to_string())
            .unwrap();
        async move {
            let resp = server.oneshot(req).await.unwrap();
            let code = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (code, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (code, status) = req(
        "PATCH",
        format!("{np}/p"),
        patch,
        "application/merge-patch+json",
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("nodeClassRef.group is immutable"));
    let stored = server
        .get(&Gvr::new("karpenter.sh", "v1", "nodepools"), None, "p")
        .unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["nodeClassRef"]["group"],
        "karpenter.k8s.aws"
    );

    // A status write validates the whole object: the spec is unchanged, so it passes.
    let mut with_status = stored.clone();
    with_status["status"] = json!({"conditions": []});
    let (code, body) = req(
        "PUT",
        format!("{np}/p/status"),
        with_status,
        "application/json",
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // An update that leaves the spec alone passes the claim's `self == oldSelf`.
    let nc = Kind::NodeClaim.collection();
    let (code, body) = request(&server, "POST", &nc, &Kind::NodeClaim.base("c")).await;
    assert_eq!(code, 201, "{body}");
    let mut claim = Kind::NodeClaim.base("c");
    claim["metadata"]["annotations"] = json!({"a": "b"});
    let (code, body) = request(&server, "PUT", &format!("{nc}/c"), &claim).await;
    assert_eq!(code, 200, "{body}");
}

fn widget_crd(rules: Value) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"size": {"type": "integer"}, "color": {"type": "string"}},
                    "x-kubernetes-validations": rules}}}}}]}})
}

#[test]
fn objects_stored_before_a_rule_existed_can_still_be_updated_elsewhere() {
    let server = ApiServer::new();
    server.apply(widget_crd(json!([]))).unwrap();
    let widget = |size: i64, color: &str| {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
               "spec": {"size": size, "color": color}})
    };
    server.apply(widget(10, "red")).unwrap();
    server
        .apply(widget_crd(
            json!([{"rule": "self.size < 5", "message": "too big"}]),
        ))
        .unwrap();
    // The spec as a whole is ratcheted only while it is unchanged: a changed color makes the
    // old violation count again (kube ratchets per value the rule is declared on).
    let err = server.apply(widget(10, "blue")).unwrap_err();
    assert_eq!(err.code(), 422);
    assert_eq!(
        err.message,
        r#"Widget.example.com "w" is invalid: spec: Invalid value: "object": too big"#
    );
    // Labels are outside the spec: the untouched invalid spec is not re-judged.
    let mut labelled = widget(10, "red");
    labelled["metadata"]["labels"] = json!({"team": "a"});
    server
        .apply(labelled)
        .expect("an unchanged invalid spec ratchets");
    server.apply(widget(3, "blue")).expect("a valid spec");
}

#[test]
fn a_crd_whose_rule_does_not_compile_is_refused() {
    let server = ApiServer::new();
    let crd = widget_crd(json!([{"rule": "self.size( > 1", "message": "m"}]));
    let err = server.apply(crd).unwrap_err();
    assert_eq!(err.code(), 422);
    assert!(
        err.message.starts_with(r#"CustomResourceDefinition.apiextensions.k8s.io "widgets.example.com" is invalid: spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: "self.size( > 1": compilation failed: "#),
        "{}",
        err.message
    );
    assert!(server
        .get(
            &Gvr::new("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
            None,
            "widgets.example.com"
        )
        .is_none());
}

#[test]
fn the_example_manifests_are_valid() {
    let server = server_with_crds();
    for text in [
        include_str!("../../examples/seed/ec2nodeclass.yaml"),
        include_str!("../../examples/seed/nodepool.yaml"),
    ] {
        server
            .apply_yaml(text)
            .expect("the seed manifests satisfy every rule");
    }
}

/// kubectl against the server on a loopback port: (success, stdout + stderr).
fn kubectl(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let out = std::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("HOME", dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl is required by this test and could not run ({bin:?}: {e}); install it \
                 or set KUBECTL=/path/to/kubectl"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_through_kubectl_accepts_the_valid_and_refuses_the_invalid_manifest() {
    let server = server_with_crds();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener));
    let dir = std::env::temp_dir().join(format!("karp-cel-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    karp_apiserver::write_kubeconfig(&dir.join("kubeconfig"), &url).unwrap();
    let file = |name: &str, obj: &Value| {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(obj).unwrap()).unwrap();
        path.to_string_lossy().into_owned()
    };
    for (i, c) in all_cases().iter().enumerate() {
        let what = format!("{:?} {} `{}`", c.kind, c.at, c.rule);
        for (valid, edits) in [(true, &c.valid), (false, &c.invalid)] {
            let name = format!("k{}-{i}", if valid { "ok" } else { "bad" });
            // Transition rules: the original is created first, then replaced.
            let (verb, obj) = match &c.before {
                None => ("create", edit(c.kind.base(&name), edits)),
                Some(before) => {
                    let original = edit(c.kind.base(&name), before);
                    let (ok, out) = kubectl(&dir, &["create", "-f", &file(&name, &original)]);
                    assert!(ok, "{what}: the original was refused: {out}");
                    let current = server
                        .get(
                            &Gvr::new(
                                c.kind.group(),
                                "v1",
                                c.kind.collection().rsplit('/').next().unwrap(),
                            ),
                            None,
                            &name,
                        )
                        .expect("the original is stored");
                    let mut changed = edit(original, edits);
                    changed["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    ("replace", changed)
                }
            };
            let shown = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (ok, out) = kubectl(&dir, &[verb, "-f", &file(&name, &obj)]);
            if valid {
                assert!(
                    ok,
                    "{what}: kubectl {verb} of the valid manifest failed: {out}"
                );
            } else {
                assert!(
                    !ok,
                    "{what}: kubectl {verb} of the invalid manifest succeeded: {out}"
                );
                assert!(
                    out.contains(&format!("The {} \"{shown}\" is invalid", c.kind.name()))
                        && out.contains(c.error),
                    "{what}: expected {:?} in kubectl's output: {out}",
                    c.error
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
