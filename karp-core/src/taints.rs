//! Taints and tolerations, with Kubernetes matching rules.
//!
//! ```
//! use karp_core::taints::{Effect, Taint, Toleration};
//!
//! let taint = Taint::new("dedicated", "gpu", Effect::NoSchedule);
//! assert!(Toleration::exists("dedicated").tolerates(&taint));
//! assert!(!Toleration::equal("dedicated", "web", None).tolerates(&taint));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// A taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Effect {
    /// New pods that do not tolerate the taint are not scheduled.
    NoSchedule,
    /// The scheduler tries to avoid the node.
    PreferNoSchedule,
    /// Running pods that do not tolerate the taint are evicted too.
    NoExecute,
}

impl Effect {
    /// Parse the manifest spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Effect> {
        match s {
            "NoSchedule" => Some(Effect::NoSchedule),
            "PreferNoSchedule" => Some(Effect::PreferNoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }

    /// The manifest spelling.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    /// The key.
    pub key: String,
    /// The value (empty when unset).
    #[serde(default)]
    pub value: String,
    /// The effect.
    pub effect: Effect,
}

impl Taint {
    /// A taint `key=value:effect`.
    #[must_use]
    pub fn new(key: impl Into<String>, value: impl Into<String>, effect: Effect) -> Self {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

/// How a toleration compares values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub enum TolerationOperator {
    /// The taint value must equal the toleration value.
    #[default]
    Equal,
    /// Any value.
    Exists,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Toleration {
    /// The key; empty with `Exists` tolerates every taint.
    #[serde(default)]
    pub key: String,
    /// The operator.
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The value for `Equal`.
    #[serde(default)]
    pub value: String,
    /// The effect; `None` matches every effect.
    #[serde(default)]
    pub effect: Option<Effect>,
}

impl Toleration {
    /// Tolerate any taint with `key`.
    #[must_use]
    pub fn exists(key: impl Into<String>) -> Self {
        Toleration {
            key: key.into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        }
    }

    /// Tolerate `key=value` with the given effect (all effects when `None`).
    #[must_use]
    pub fn equal(key: impl Into<String>, value: impl Into<String>, effect: Option<Effect>) -> Self {
        Toleration {
            key: key.into(),
            operator: TolerationOperator::Equal,
            value: value.into(),
            effect,
        }
    }

    /// Tolerate every taint with this effect.
    #[must_use]
    pub fn all_with_effect(effect: Effect) -> Self {
        Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(effect),
        }
    }

    /// Whether this toleration tolerates `taint` (Kubernetes `ToleratesTaint`).
    #[must_use]
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if let Some(e) = self.effect {
            if e != taint.effect {
                return false;
            }
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            // An empty key with Equal is invalid in Kubernetes and matches nothing but the empty key.
            TolerationOperator::Equal => {
                (!self.key.is_empty() || taint.key.is_empty()) && self.value == taint.value
            }
        }
    }
}

/// The first taint (in order) that none of the tolerations tolerates.
#[must_use]
pub fn first_untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let t = Taint::new("k", "v", Effect::NoSchedule);
        assert!(Toleration::equal("k", "v", None).tolerates(&t));
        assert!(Toleration::equal("k", "v", Some(Effect::NoSchedule)).tolerates(&t));
        assert!(!Toleration::equal("k", "v", Some(Effect::NoExecute)).tolerates(&t));
        assert!(!Toleration::equal("k", "w", None).tolerates(&t));
        assert!(!Toleration::equal("j", "v", None).tolerates(&t));
        assert!(Toleration::exists("k").tolerates(&t));
        // Empty key with Exists tolerates everything.
        assert!(Toleration::exists("").tolerates(&t));
        assert!(Toleration::all_with_effect(Effect::NoSchedule).tolerates(&t));
        assert!(!Toleration::all_with_effect(Effect::PreferNoSchedule).tolerates(&t));
        // Empty key with Equal does not.
        assert!(!Toleration::equal("", "v", None).tolerates(&t));
        let no_value = Taint::new("k", "", Effect::PreferNoSchedule);
        assert!(Toleration::equal("k", "", None).tolerates(&no_value));
        assert!(Toleration::all_with_effect(Effect::PreferNoSchedule).tolerates(&no_value));
    }

    #[test]
    fn first_untolerated_names_the_taint() {
        let taints = vec![
            Taint::new("a", "", Effect::NoSchedule),
            Taint::new("b", "x", Effect::NoExecute),
        ];
        let tols = vec![Toleration::exists("a")];
        assert_eq!(
            first_untolerated(&taints, &tols).map(ToString::to_string),
            Some("b=x:NoExecute".to_string())
        );
        assert_eq!(first_untolerated(&taints, &[Toleration::exists("")]), None);
    }
}
