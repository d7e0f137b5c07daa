//! Label requirements: the algebra of node selectors.
//!
//! A [`Requirement`] denotes the set of states a node label may be in: absent, or one of a set of
//! values, optionally bounded as an integer. Every Kubernetes operator (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`, `Gt`, `Lt`) and Karpenter's `Gte` / `Lte` is such a set, and
//! [`Requirement::intersect`] is exact set intersection, so it is commutative, associative and
//! idempotent, and two requirements are compatible exactly when their intersection is non-empty.
//!
//! [`Requirements`] maps label keys to requirements. Compatibility between a node side (NodePool
//! template, NodeClaim, instance type) and a pod side explains *why* it fails.
//!
//! ```
//! use karp_core::requirements::{Operator, Requirement, Requirements};
//!
//! let pool = Requirements::from_iter([Requirement::new("karpenter.sh/capacity-type", Operator::In, ["spot", "on-demand"]).unwrap()]);
//! let pod = Requirements::from_iter([Requirement::new("karpenter.sh/capacity-type", Operator::NotIn, ["spot"]).unwrap()]);
//! assert!(pool.compatible(&pod, &|_| true).is_ok());
//! let both = pool.intersect(&pod);
//! assert_eq!(both.get("karpenter.sh/capacity-type").unwrap().values(), vec!["on-demand"]);
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A node selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present with one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer greater than the value.
    Gt,
    /// The label is an integer less than the value.
    Lt,
    /// The label is an integer greater than or equal to the value.
    Gte,
    /// The label is an integer less than or equal to the value.
    Lte,
}

impl Operator {
    /// Parse an operator name as written in manifests.
    ///
    /// # Errors
    /// [`RequirementError::UnknownOperator`] for anything else.
    pub fn parse(s: &str) -> Result<Self, RequirementError> {
        Ok(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            "Gte" => Operator::Gte,
            "Lte" => Operator::Lte,
            other => {
                return Err(RequirementError::UnknownOperator {
                    operator: other.to_string(),
                })
            }
        })
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
            Operator::Gte => "Gte",
            Operator::Lte => "Lte",
        }
    }

    /// Every operator.
    pub const ALL: [Operator; 8] = [
        Operator::In,
        Operator::NotIn,
        Operator::Exists,
        Operator::DoesNotExist,
        Operator::Gt,
        Operator::Lt,
        Operator::Gte,
        Operator::Lte,
    ];
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a requirement could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// The operator is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte.
    #[error("unknown operator {operator:?} (expected In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte or Lte)")]
    UnknownOperator {
        /// What was given.
        operator: String,
    },
    /// `In` / `NotIn` without values.
    #[error("operator {operator} on key {key:?} needs at least one value")]
    MissingValues {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// `Exists` / `DoesNotExist` with values.
    #[error("operator {operator} on key {key:?} takes no values")]
    UnexpectedValues {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// `Gt` / `Lt` / `Gte` / `Lte` without exactly one integer value.
    #[error("operator {operator} on key {key:?} needs exactly one integer value, got {values:?}")]
    NotAnInteger {
        /// The key.
        key: String,
        /// The operator.
        operator: Operator,
        /// The values given.
        values: Vec<String>,
    },
    /// An empty key.
    #[error("requirement key is empty")]
    EmptyKey,
    /// `minValues` out of range.
    #[error("minValues {min_values} on key {key:?} must be between 1 and 50 and at most the number of values")]
    BadMinValues {
        /// The key.
        key: String,
        /// The value given.
        min_values: i64,
    },
}

/// The values of a [`ValueSet`], shared: cloning a requirement (every NodeClaim of a pass carries
/// its instance-type options, hundreds of names) copies a pointer, and a set is copied only when
/// one holder changes it.
pub type Values = std::sync::Arc<BTreeSet<String>>;

/// The set of values a requirement allows (when the label is present).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueSet {
    /// Exactly these values.
    Only(Values),
    /// Any value except these.
    AllExcept(Values),
}

/// One label requirement: which states of label `key` are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    key: String,
    allow_absent: bool,
    values: ValueSet,
    /// Inclusive integer lower bound (present only with `AllExcept`).
    min: Option<i64>,
    /// Inclusive integer upper bound (present only with `AllExcept`).
    max: Option<i64>,
    min_values: Option<usize>,
}

/// A node selector requirement as written in manifests and plan output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (empty for Exists / DoesNotExist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Karpenter's `minValues`: the least number of distinct values to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_values: Option<usize>,
}

fn parse_int(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

impl Requirement {
    /// Build a requirement from an operator and values, validating them as Kubernetes does.
    ///
    /// # Errors
    /// [`RequirementError`] naming the key and the problem.
    pub fn new<I, S>(
        key: impl Into<String>,
        op: Operator,
        values: I,
    ) -> Result<Self, RequirementError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let key = key.into();
        if key.is_empty() {
            return Err(RequirementError::EmptyKey);
        }
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let int_value = || -> Result<i64, RequirementError> {
            match values.as_slice() {
                [v] => parse_int(v).ok_or_else(|| RequirementError::NotAnInteger {
                    key: key.clone(),
                    operator: op,
                    values: values.clone(),
                }),
                _ => Err(RequirementError::NotAnInteger {
                    key: key.clone(),
                    operator: op,
                    values: values.clone(),
                }),
            }
        };
        let base = |allow_absent, values| Requirement {
            key: key.clone(),
            allow_absent,
            values,
            min: None,
            max: None,
            min_values: None,
        };
        let r = match op {
            Operator::In | Operator::NotIn if set.is_empty() => {
                return Err(RequirementError::MissingValues { key, operator: op });
            }
            Operator::Exists | Operator::DoesNotExist if !set.is_empty() => {
                return Err(RequirementError::UnexpectedValues { key, operator: op });
            }
            Operator::In => base(false, ValueSet::Only(Values::new(set))),
            Operator::NotIn => base(true, ValueSet::AllExcept(Values::new(set))),
            Operator::Exists => base(false, ValueSet::AllExcept(Values::default())),
            Operator::DoesNotExist => base(true, ValueSet::Only(Values::default())),
            Operator::Gt => {
                let n = int_value()?;
                Requirement {
                    min: Some(n.saturating_add(1)),
                    ..base(false, ValueSet::AllExcept(Values::default()))
                }
            }
            Operator::Gte => {
                let n = int_value()?;
                Requirement {
                    min: Some(n),
                    ..base(false, ValueSet::AllExcept(Values::default()))
                }
            }
            Operator::Lt => {
                let n = int_value()?;
                Requirement {
                    max: Some(n.saturating_sub(1)),
                    ..base(false, ValueSet::AllExcept(Values::default()))
                }
            }
            Operator::Lte => {
                let n = int_value()?;
                Requirement {
                    max: Some(n),
                    ..base(false, ValueSet::AllExcept(Values::default()))
                }
            }
        };
        Ok(r.normalized())
    }

    /// `key In [values]`; panics never, but an empty list gives the empty set.
    #[must_use]
    pub fn in_values<I, S>(key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Requirement {
            key: key.into(),
            allow_absent: false,
            values: ValueSet::Only(Values::new(values.into_iter().map(Into::into).collect())),
            min: None,
            max: None,
            min_values: None,
        }
    }

    /// `key Exists`.
    #[must_use]
    pub fn exists(key: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            allow_absent: false,
            values: ValueSet::AllExcept(Values::default()),
            min: None,
            max: None,
            min_values: None,
        }
    }

    /// `key DoesNotExist`.
    #[must_use]
    pub fn does_not_exist(key: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            allow_absent: true,
            values: ValueSet::Only(Values::default()),
            min: None,
            max: None,
            min_values: None,
        }
    }

    /// The unconstrained requirement on `key` (absent or any value).
    #[must_use]
    pub fn any(key: impl Into<String>) -> Self {
        Requirement {
            key: key.into(),
            allow_absent: true,
            values: ValueSet::AllExcept(Values::default()),
            min: None,
            max: None,
            min_values: None,
        }
    }

    /// Build from a manifest requirement (including `minValues`).
    ///
    /// # Errors
    /// [`RequirementError`] when the operator and values do not fit together.
    pub fn from_node_selector(r: &NodeSelectorRequirement) -> Result<Self, RequirementError> {
        let mut req = Requirement::new(r.key.clone(), r.operator, r.values.iter().cloned())?;
        if let Some(mv) = r.min_values {
            let n_values = r.values.len();
            if mv == 0 || mv > 50 || (r.operator == Operator::In && mv > n_values) {
                return Err(RequirementError::BadMinValues {
                    key: r.key.clone(),
                    min_values: mv as i64,
                });
            }
            req.min_values = Some(mv);
        }
        Ok(req)
    }

    /// Set `minValues`.
    #[must_use]
    pub fn with_min_values(mut self, n: usize) -> Self {
        self.min_values = Some(n);
        self
    }

    /// The label key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `minValues`, if any.
    #[must_use]
    pub fn min_values(&self) -> Option<usize> {
        self.min_values
    }

    /// Whether a node without this label satisfies the requirement.
    #[must_use]
    pub fn allows_absent(&self) -> bool {
        self.allow_absent
    }

    /// The allowed value set.
    #[must_use]
    pub fn value_set(&self) -> &ValueSet {
        &self.values
    }

    /// Integer bounds (inclusive), if any.
    #[must_use]
    pub fn bounds(&self) -> (Option<i64>, Option<i64>) {
        (self.min, self.max)
    }

    fn normalized(mut self) -> Self {
        let (min, max) = (self.min, self.max);
        let in_bounds = |v: &String| match parse_int(v) {
            Some(n) => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
            None => false,
        };
        match &mut self.values {
            ValueSet::Only(set) => {
                if min.is_some() || max.is_some() {
                    std::sync::Arc::make_mut(set).retain(in_bounds);
                }
                self.min = None;
                self.max = None;
            }
            ValueSet::AllExcept(set) => {
                if min.is_some() || max.is_some() {
                    // Only excluded values inside the range matter.
                    std::sync::Arc::make_mut(set).retain(|v| in_bounds(v));
                    if let (Some(lo), Some(hi)) = (min, max) {
                        if lo > hi {
                            self.values = ValueSet::Only(Values::default());
                            self.min = None;
                            self.max = None;
                        }
                    }
                }
            }
        }
        self
    }

    /// Whether no label state satisfies this requirement.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.allow_absent && matches!(&self.values, ValueSet::Only(s) if s.is_empty())
    }

    /// Whether a node whose label `key` is `value` (`None`: absent) satisfies this requirement.
    #[must_use]
    pub fn matches(&self, value: Option<&str>) -> bool {
        match value {
            None => self.allow_absent,
            Some(v) => self.has(v),
        }
    }

    /// Whether the present value `v` is allowed.
    #[must_use]
    pub fn has(&self, v: &str) -> bool {
        let in_set = match &self.values {
            ValueSet::Only(s) => s.contains(v),
            ValueSet::AllExcept(s) => !s.contains(v),
        };
        if !in_set {
            return false;
        }
        if self.min.is_none() && self.max.is_none() {
            return true;
        }
        match parse_int(v) {
            Some(n) => self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m),
            None => false,
        }
    }

    /// Exact intersection of the two sets (keys must match; the result keeps `self`'s key).
    /// `minValues` is the larger of the two.
    #[must_use]
    pub fn intersect(&self, other: &Requirement) -> Requirement {
        let allow_absent = self.allow_absent && other.allow_absent;
        let min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let values = match (&self.values, &other.values) {
            (ValueSet::Only(a), ValueSet::Only(b)) => {
                ValueSet::Only(Values::new(a.intersection(b).cloned().collect()))
            }
            (ValueSet::Only(a), ValueSet::AllExcept(b))
            | (ValueSet::AllExcept(b), ValueSet::Only(a)) => {
                ValueSet::Only(Values::new(a.difference(b).cloned().collect()))
            }
            (ValueSet::AllExcept(a), ValueSet::AllExcept(b)) => {
                ValueSet::AllExcept(Values::new(a.union(b).cloned().collect()))
            }
        };
        let min_values = self.min_values.max(other.min_values);
        Requirement {
            key: self.key.clone(),
            allow_absent,
            values,
            min,
            max,
            min_values,
        }
        .normalized()
    }

    /// Whether every label state `self` allows, `other` allows too (and `other` asks for no
    /// larger `minValues`). Conservative: may answer `false` for some subsets with open integer
    /// ranges, never `true` for a non-subset.
    #[must_use]
    pub fn is_subset_of(&self, other: &Requirement) -> bool {
        if (self.allow_absent && !other.allow_absent) || other.min_values > self.min_values {
            return false;
        }
        match (&self.values, &other.values) {
            (ValueSet::Only(a), _) => a.iter().all(|v| other.has(v)),
            (ValueSet::AllExcept(a), ValueSet::AllExcept(b)) => {
                let bounds_within = other.min.is_none_or(|m| self.min.is_some_and(|s| s >= m))
                    && other.max.is_none_or(|m| self.max.is_some_and(|s| s <= m));
                bounds_within && b.iter().all(|v| a.contains(v) || !self.has(v))
            }
            (ValueSet::AllExcept(_), ValueSet::Only(_)) => false,
        }
    }

    /// Whether the intersection with `other` is non-empty, without building it.
    #[must_use]
    pub fn intersects(&self, other: &Requirement) -> bool {
        if self.allow_absent && other.allow_absent {
            return true;
        }
        match (&self.values, &other.values) {
            (ValueSet::Only(a), ValueSet::Only(b)) => {
                let (small, big_req) = if a.len() <= b.len() {
                    (a, other)
                } else {
                    (b, self)
                };
                let small_req = if a.len() <= b.len() { self } else { other };
                small.iter().any(|v| big_req.has(v) && small_req.has(v))
            }
            (ValueSet::Only(a), ValueSet::AllExcept(_)) => {
                a.iter().any(|v| self.has(v) && other.has(v))
            }
            (ValueSet::AllExcept(_), ValueSet::Only(b)) => {
                b.iter().any(|v| self.has(v) && other.has(v))
            }
            (ValueSet::AllExcept(_), ValueSet::AllExcept(_)) => !self.intersect(other).is_empty(),
        }
    }

    /// The explicit values allowed when the set is finite (sorted); empty for open sets.
    #[must_use]
    pub fn values(&self) -> Vec<&str> {
        match &self.values {
            ValueSet::Only(s) => s.iter().map(String::as_str).collect(),
            ValueSet::AllExcept(_) => Vec::new(),
        }
    }

    /// The number of allowed present values, `None` when unbounded.
    #[must_use]
    pub fn len(&self) -> Option<usize> {
        match &self.values {
            ValueSet::Only(s) => Some(s.len()),
            ValueSet::AllExcept(_) => None,
        }
    }

    /// Whether the finite value set is a single value (and the label must be present).
    #[must_use]
    pub fn single_value(&self) -> Option<&str> {
        match &self.values {
            ValueSet::Only(s) if s.len() == 1 && !self.allow_absent => {
                s.iter().next().map(String::as_str)
            }
            _ => None,
        }
    }

    /// Express as manifest requirements (several when one operator cannot say it, e.g.
    /// `Exists` plus `NotIn`). The unconstrained requirement gives none.
    #[must_use]
    pub fn to_node_selector(&self) -> Vec<NodeSelectorRequirement> {
        let mk = |operator, values: Vec<String>| NodeSelectorRequirement {
            key: self.key.clone(),
            operator,
            values,
            min_values: self.min_values,
        };
        let mut out = Vec::new();
        match &self.values {
            ValueSet::Only(s) if s.is_empty() && self.allow_absent => {
                out.push(mk(Operator::DoesNotExist, vec![]))
            }
            ValueSet::Only(s) => out.push(mk(Operator::In, s.iter().cloned().collect())),
            ValueSet::AllExcept(s) => {
                if !self.allow_absent && s.is_empty() && self.min.is_none() && self.max.is_none() {
                    out.push(mk(Operator::Exists, vec![]));
                }
                if !s.is_empty() {
                    if !self.allow_absent && self.min.is_none() && self.max.is_none() {
                        out.push(mk(Operator::Exists, vec![]));
                    }
                    out.push(mk(Operator::NotIn, s.iter().cloned().collect()));
                }
                if let Some(m) = self.min {
                    out.push(mk(Operator::Gte, vec![m.to_string()]));
                }
                if let Some(m) = self.max {
                    out.push(mk(Operator::Lte, vec![m.to_string()]));
                }
            }
        }
        out
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.to_node_selector();
        if parts.is_empty() {
            return write!(f, "{} (any)", self.key);
        }
        let s: Vec<String> = parts
            .iter()
            .map(|p| {
                if p.values.is_empty() {
                    format!("{} {}", p.key, p.operator)
                } else {
                    format!("{} {} [{}]", p.key, p.operator, p.values.join(", "))
                }
            })
            .collect();
        f.write_str(&s.join(" and "))
    }
}

/// Why a pod's requirements do not fit a node's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    /// Both sides constrain `key` and no label state satisfies both.
    #[error("{key}: pod needs {pod}, but the node offers {node}")]
    Disjoint {
        /// The label key.
        key: String,
        /// The pod-side requirement.
        pod: String,
        /// The node-side requirement.
        node: String,
    },
    /// The pod needs a label the node side never sets.
    #[error("{key}: pod needs {pod}, but no node pool or instance type sets label {key:?}")]
    Undefined {
        /// The label key.
        key: String,
        /// The pod-side requirement.
        pod: String,
    },
}

/// Requirements by label key. A missing key means "not constrained here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirements {
    map: BTreeMap<String, Requirement>,
}

impl FromIterator<Requirement> for Requirements {
    fn from_iter<T: IntoIterator<Item = Requirement>>(iter: T) -> Self {
        let mut r = Requirements::new();
        for req in iter {
            r.add(req);
        }
        r
    }
}

impl Requirements {
    /// No requirements.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `key In [value]` for every label.
    #[must_use]
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        labels
            .into_iter()
            .map(|(k, v)| Requirement::in_values(k.clone(), [v.clone()]))
            .collect()
    }

    /// Build from manifest requirements (ANDed; repeated keys intersect).
    ///
    /// # Errors
    /// The first invalid requirement, with its index.
    pub fn from_node_selector(
        reqs: &[NodeSelectorRequirement],
    ) -> Result<Self, (usize, RequirementError)> {
        let mut out = Requirements::new();
        for (i, r) in reqs.iter().enumerate() {
            out.add(Requirement::from_node_selector(r).map_err(|e| (i, e))?);
        }
        Ok(out)
    }

    /// Intersect `req` into the set (adding it when the key is new). Returns whether anything changed.
    pub fn add(&mut self, req: Requirement) -> bool {
        match self.map.get_mut(&req.key) {
            Some(existing) => {
                let merged = existing.intersect(&req);
                if merged == *existing {
                    false
                } else {
                    *existing = merged;
                    true
                }
            }
            None => {
                self.map.insert(req.key.clone(), req);
                true
            }
        }
    }

    /// Intersect every requirement of `other` into `self`. Returns whether anything changed.
    pub fn add_all(&mut self, other: &Requirements) -> bool {
        let mut changed = false;
        for r in other.map.values() {
            changed |= self.add(r.clone());
        }
        changed
    }

    /// The intersection of two sets of requirements.
    #[must_use]
    pub fn intersect(&self, other: &Requirements) -> Requirements {
        let mut r = self.clone();
        r.add_all(other);
        r
    }

    /// Visit each key of `self.intersect(other)` in key order with the present values the
    /// intersection allows there (what [`Requirement::values`] of it returns, in the same
    /// order), without building the intersection.
    ///
    /// ```
    /// use karp_core::requirements::{Requirement, Requirements};
    /// let a: Requirements = [Requirement::in_values("zone", ["a", "b"])].into_iter().collect();
    /// let b: Requirements = [
    ///     Requirement::in_values("arch", ["arm64"]),
    ///     Requirement::in_values("zone", ["b", "c"]),
    /// ]
    /// .into_iter()
    /// .collect();
    /// let mut seen = Vec::new();
    /// a.for_each_intersected(&b, |key, values| {
    ///     seen.push((key.to_string(), values.map(str::to_string).collect::<Vec<_>>()));
    /// });
    /// assert_eq!(seen, [("arch".into(), vec!["arm64".into()]), ("zone".into(), vec!["b".into()])]);
    /// ```
    pub fn for_each_intersected<'s>(
        &'s self,
        other: &'s Requirements,
        mut f: impl FnMut(&'s str, &mut dyn Iterator<Item = &'s str>),
    ) {
        static NONE: BTreeSet<String> = BTreeSet::new();
        // The values one side allows: its `In` set, or none for a complement.
        let own = |r: &'s Requirement| match &r.values {
            ValueSet::Only(s) => &**s,
            ValueSet::AllExcept(_) => &NONE,
        };
        let mut visit =
            |key: &'s str, from: &'s BTreeSet<String>, filter: &'s BTreeSet<String>, keep: bool| {
                f(
                    key,
                    &mut from
                        .iter()
                        .filter(move |v| filter.contains(*v) == keep)
                        .map(String::as_str),
                );
            };
        let mut a = self.map.iter().peekable();
        let mut b = other.map.iter().peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
            };
            match order {
                Ordering::Less => {
                    if let Some((k, r)) = a.next() {
                        visit(k, own(r), &NONE, false);
                    }
                }
                Ordering::Greater => {
                    if let Some((k, r)) = b.next() {
                        visit(k, own(r), &NONE, false);
                    }
                }
                Ordering::Equal => {
                    if let (Some((k, ra)), Some((_, rb))) = (a.next(), b.next()) {
                        match (&ra.values, &rb.values) {
                            (ValueSet::Only(x), ValueSet::Only(y)) => visit(k, x, y, true),
                            (ValueSet::Only(x), ValueSet::AllExcept(y))
                            | (ValueSet::AllExcept(y), ValueSet::Only(x)) => {
                                visit(k, x, y, false);
                            }
                            (ValueSet::AllExcept(_), ValueSet::AllExcept(_)) => {
                                visit(k, &NONE, &NONE, false);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The requirement on `key`, if constrained.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Requirement> {
        self.map.get(key)
    }

    /// Whether `key` is constrained.
    #[must_use]
    pub fn has_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Remove the requirement on `key`.
    pub fn remove(&mut self, key: &str) -> Option<Requirement> {
        self.map.remove(key)
    }

    /// Iterate in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Requirement> {
        self.map.values()
    }

    /// The constrained keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Number of constrained keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is constrained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether some key's requirement is unsatisfiable.
    #[must_use]
    pub fn is_unsatisfiable(&self) -> bool {
        self.map.values().any(Requirement::is_empty)
    }

    /// Whether a node with these labels satisfies every requirement.
    #[must_use]
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.map
            .values()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Check that a pod's requirements (`pod`) can be met by a node described by `self`.
    ///
    /// Keys both sides constrain must intersect. A key only the pod constrains is fine when
    /// `is_well_known(key)` (the node side may still set it, e.g. an instance type label), and
    /// otherwise the node will not have that label, so the pod must allow it to be absent.
    ///
    /// # Errors
    /// [`Incompatible`] for the first key (in key order) that fails.
    pub fn compatible(
        &self,
        pod: &Requirements,
        is_well_known: &dyn Fn(&str) -> bool,
    ) -> Result<(), Incompatible> {
        for p in pod.map.values() {
            match self.map.get(&p.key) {
                Some(n) => {
                    if !n.intersects(p) {
                        return Err(Incompatible::Disjoint {
                            key: p.key.clone(),
                            pod: p.to_string(),
                            node: n.to_string(),
                        });
                    }
                }
                None => {
                    if !p.allow_absent && !is_well_known(&p.key) {
                        return Err(Incompatible::Undefined {
                            key: p.key.clone(),
                            pod: p.to_string(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether intersecting `other` into `self` would change `self`.
    #[must_use]
    pub fn is_narrowed_by(&self, other: &Requirements) -> bool {
        other
            .map
            .values()
            .any(|o| self.map.get(&o.key).is_none_or(|s| !s.is_subset_of(o)))
    }

    /// Whether every key constrained by both sides intersects (keys on one side only are ignored).
    #[must_use]
    pub fn intersects(&self, other: &Requirements) -> bool {
        let (small, big) = if self.len() <= other.len() {
            (self, other)
        } else {
            (other, self)
        };
        small
            .map
            .values()
            .all(|r| big.map.get(&r.key).is_none_or(|o| o.intersects(r)))
    }

    /// Express as manifest requirements, in key order.
    #[must_use]
    pub fn to_node_selector(&self) -> Vec<NodeSelectorRequirement> {
        self.map
            .values()
            .flat_map(Requirement::to_node_selector)
            .collect()
    }
}

impl fmt::Display for Requirements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.map.values().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Operator, values: &[&str]) -> Requirement {
        Requirement::new("k", op, values.iter().copied()).unwrap()
    }

    /// A representative requirement for every operator.
    fn samples() -> Vec<(Operator, Requirement)> {
        vec![
            (Operator::In, req(Operator::In, &["1", "2"])),
            (Operator::NotIn, req(Operator::NotIn, &["2", "3"])),
            (Operator::Exists, req(Operator::Exists, &[])),
            (Operator::DoesNotExist, req(Operator::DoesNotExist, &[])),
            (Operator::Gt, req(Operator::Gt, &["1"])),
            (Operator::Lt, req(Operator::Lt, &["3"])),
            (Operator::Gte, req(Operator::Gte, &["2"])),
            (Operator::Lte, req(Operator::Lte, &["1"])),
        ]
    }

    /// The label states we test against: absent and a few values.
    const STATES: [Option<&str>; 6] = [None, Some("0"), Some("1"), Some("2"), Some("3"), Some("x")];

    #[test]
    fn each_operator_matches_the_states_kubernetes_defines() {
        let expect: [(Operator, [bool; 6]); 8] = [
            (Operator::In, [false, false, true, true, false, false]),
            (Operator::NotIn, [true, true, true, false, false, true]),
            (Operator::Exists, [false, true, true, true, true, true]),
            (
                Operator::DoesNotExist,
                [true, false, false, false, false, false],
            ),
            (Operator::Gt, [false, false, false, true, true, false]),
            (Operator::Lt, [false, true, true, true, false, false]),
            (Operator::Gte, [false, false, false, true, true, false]),
            (Operator::Lte, [false, true, true, false, false, false]),
        ];
        for ((op, r), (op2, row)) in samples().into_iter().zip(expect) {
            assert_eq!(op, op2);
            for (state, want) in STATES.iter().zip(row) {
                assert_eq!(r.matches(*state), want, "{op} on {state:?}");
            }
        }
    }

    /// The exhaustive operator-pair matrix: for every pair, the intersection allows exactly the
    /// states both allow, and compatibility agrees with non-emptiness.
    #[test]
    fn operator_pair_matrix_is_exact() {
        for (op_a, a) in samples() {
            for (op_b, b) in samples() {
                let i = a.intersect(&b);
                for s in STATES {
                    assert_eq!(
                        i.matches(s),
                        a.matches(s) && b.matches(s),
                        "{op_a} ∩ {op_b} on {s:?}"
                    );
                }
                let any_state = STATES.iter().any(|s| i.matches(*s));
                // Wider domain than STATES for open sets: the intersection may be non-empty
                // through other values, but never empty while a sample state matches.
                if any_state {
                    assert!(!i.is_empty(), "{op_a} ∩ {op_b}");
                }
                assert_eq!(a.intersects(&b), !i.is_empty(), "{op_a} ∩ {op_b}");
            }
        }
    }

    #[test]
    fn specific_pairs_from_karpenter() {
        // NotIn on both sides is compatible: the label may be absent.
        assert!(req(Operator::NotIn, &["a"]).intersects(&req(Operator::NotIn, &["a"])));
        assert!(req(Operator::DoesNotExist, &[]).intersects(&req(Operator::NotIn, &["a"])));
        assert!(!req(Operator::DoesNotExist, &[]).intersects(&req(Operator::Exists, &[])));
        assert!(!req(Operator::In, &["a"]).intersects(&req(Operator::NotIn, &["a"])));
        assert!(!req(Operator::Gt, &["5"]).intersects(&req(Operator::Lt, &["6"])));
        assert!(req(Operator::Gt, &["5"]).intersects(&req(Operator::Lt, &["7"])));
        assert!(!req(Operator::Gt, &["5"]).intersects(&req(Operator::In, &["5", "a"])));
        assert!(req(Operator::Gte, &["5"]).intersects(&req(Operator::In, &["5"])));
    }

    #[test]
    fn integer_ranges_keep_non_canonical_spellings() {
        // Kubernetes parses "01" as 1, so it satisfies both bounds and their intersection.
        let i = req(Operator::Gte, &["0"]).intersect(&req(Operator::Lte, &["5"]));
        assert!(i.matches(Some("01")) && i.matches(Some("5")) && !i.matches(Some("6")));
        let one = req(Operator::Gte, &["1"])
            .intersect(&req(Operator::Lte, &["1"]))
            .intersect(&req(Operator::NotIn, &["1"]));
        assert!(!one.is_empty() && one.matches(Some("+1")) && !one.matches(Some("1")));
        assert!(req(Operator::Gt, &["5"])
            .intersect(&req(Operator::Lt, &["6"]))
            .is_empty());
    }

    #[test]
    fn invalid_requirements_are_rejected() {
        assert!(matches!(
            Operator::parse("Like"),
            Err(RequirementError::UnknownOperator { .. })
        ));
        assert!(Requirement::new("k", Operator::In, Vec::<String>::new()).is_err());
        assert!(Requirement::new("k", Operator::Exists, ["a"]).is_err());
        assert!(Requirement::new("k", Operator::Gt, ["a"]).is_err());
        assert!(Requirement::new("k", Operator::Gt, ["1", "2"]).is_err());
        assert!(Requirement::new("", Operator::Exists, Vec::<String>::new()).is_err());
        let bad_min = NodeSelectorRequirement {
            key: "k".into(),
            operator: Operator::In,
            values: vec!["a".into()],
            min_values: Some(2),
        };
        assert!(Requirement::from_node_selector(&bad_min).is_err());
    }

    #[test]
    fn compatibility_explains_why() {
        let node = Requirements::from_iter([Requirement::in_values("zone", ["a"])]);
        let pod = Requirements::from_iter([Requirement::in_values("zone", ["b"])]);
        let err = node.compatible(&pod, &|_| false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "zone: pod needs zone In [b], but the node offers zone In [a]"
        );
        let pod = Requirements::from_iter([Requirement::in_values("team", ["x"])]);
        let err = node.compatible(&pod, &|_| false).unwrap_err();
        assert!(matches!(err, Incompatible::Undefined { .. }));
        assert!(node.compatible(&pod, &|k| k == "team").is_ok());
        let pod = Requirements::from_iter([req(Operator::NotIn, &["x"])]);
        assert!(node.compatible(&pod, &|_| false).is_ok());
    }

    #[test]
    fn node_selector_round_trip_keeps_the_set() {
        for (_, a) in samples() {
            for (_, b) in samples() {
                let i = a.intersect(&b);
                if i.is_empty() {
                    continue; // the empty set has no valid manifest form
                }
                let back = Requirements::from_node_selector(&i.to_node_selector()).unwrap();
                let back = back
                    .get("k")
                    .cloned()
                    .unwrap_or_else(|| Requirement::any("k"));
                for s in STATES {
                    assert_eq!(back.matches(s), i.matches(s));
                }
            }
        }
    }
}

#[cfg(test)]
mod laws {
    use super::*;
    use proptest::prelude::*;

    fn arb_requirement() -> impl Strategy<Value = Requirement> {
        let values = prop::collection::vec(
            prop::sample::select(vec!["1", "2", "3", "4", "a", "b"]),
            1..4,
        );
        (0usize..8, values, 0i64..6, prop::option::of(1usize..3)).prop_map(|(op, vals, n, mv)| {
            let op = Operator::ALL[op];
            let r = match op {
                Operator::In | Operator::NotIn => Requirement::new("k", op, vals),
                Operator::Exists | Operator::DoesNotExist => {
                    Requirement::new("k", op, Vec::<String>::new())
                }
                _ => Requirement::new("k", op, [n.to_string()]),
            }
            .unwrap();
            match mv {
                Some(m) => r.with_min_values(m),
                None => r,
            }
        })
    }

    const PROBES: [Option<&str>; 9] = [
        None,
        Some("0"),
        Some("1"),
        Some("2"),
        Some("3"),
        Some("4"),
        Some("5"),
        Some("a"),
        Some("b"),
    ];

    proptest! {
        #[test]
        fn intersection_is_commutative(a in arb_requirement(), b in arb_requirement()) {
            prop_assert_eq!(a.intersect(&b), b.intersect(&a));
        }

        #[test]
        fn intersection_is_idempotent(a in arb_requirement()) {
            prop_assert_eq!(a.intersect(&a), a.clone());
        }

        #[test]
        fn intersection_is_associative(a in arb_requirement(), b in arb_requirement(), c in arb_requirement()) {
            prop_assert_eq!(a.intersect(&b).intersect(&c), a.intersect(&b.intersect(&c)));
        }

        #[test]
        fn intersection_is_set_intersection(a in arb_requirement(), b in arb_requirement()) {
            let i = a.intersect(&b);
            for s in PROBES {
                prop_assert_eq!(i.matches(s), a.matches(s) && b.matches(s));
            }
        }

        #[test]
        fn subset_agrees_with_intersection(a in arb_requirement(), b in arb_requirement()) {
            if a.is_subset_of(&b) {
                prop_assert_eq!(a.intersect(&b), a.clone());
            }
            prop_assert!(a.intersect(&b).is_subset_of(&a) || a.intersect(&b).min_values() > a.min_values());
        }

        #[test]
        fn compatible_iff_intersection_non_empty(a in arb_requirement(), b in arb_requirement()) {
            let ra = Requirements::from_iter([a.clone()]);
            let rb = Requirements::from_iter([b.clone()]);
            prop_assert_eq!(ra.compatible(&rb, &|_| false).is_ok(), !a.intersect(&b).is_empty());
            prop_assert_eq!(a.intersects(&b), !a.intersect(&b).is_empty());
        }

        #[test]
        fn requirements_intersection_is_commutative(a in prop::collection::vec(arb_requirement(), 0..3), b in prop::collection::vec(arb_requirement(), 0..3)) {
            let ra: Requirements = a.into_iter().collect();
            let rb: Requirements = b.into_iter().collect();
            prop_assert_eq!(ra.intersect(&rb), rb.intersect(&ra));
            prop_assert_eq!(ra.intersect(&ra), ra.clone());
        }
    }
}
