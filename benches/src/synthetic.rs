//! Synthetic pod shapes for the solver benchmarks.
//!
//! Pods come in *deployments*: a shape (CPU, memory) drawn from the shape's menu and repeated
//! 1–20 times (pods of one deployment are identical, as replicas are). Every generator is
//! deterministic in its [`Rng`].
//!
//! ```
//! use karp_benches::synthetic::Shape;
//! use karp_benches::Rng;
//!
//! let pods = Shape::Bimodal.pods(1000, &mut Rng::new(1));
//! assert_eq!(pods.len(), 1000);
//! ```

use std::fmt;
use std::str::FromStr;

use karp_core::pod::Pod;
use karp_core::testing::pod;

use crate::Rng;

/// Most replicas of one synthetic deployment.
pub const MAX_REPLICAS: usize = 20;

/// A synthetic workload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// Many small pods: 100m–1 CPU, 128Mi–2Gi.
    UniformSmall,
    /// Half CPU-heavy deployments (1–4 CPU at 1 GiB per CPU) and half memory-heavy ones
    /// (250m–1 CPU with 4–16 GiB).
    Mixed,
    /// Few big pods (4–8 CPU, 16–32 GiB; 10 % of the pods) among many tiny ones (100m–250m,
    /// 128Mi–256Mi).
    Bimodal,
}

const SMALL_CPU: [i64; 5] = [100, 250, 500, 750, 1000];
const SMALL_MEM_MI: [i64; 5] = [128, 256, 512, 1024, 2048];
const CPU_HEAVY_CPU: [i64; 3] = [1000, 2000, 4000];
const MEM_HEAVY_CPU: [i64; 3] = [250, 500, 1000];
const MEM_HEAVY_MEM_MI: [i64; 3] = [4096, 8192, 16384];
const BIG_CPU: [i64; 2] = [4000, 8000];
const BIG_MEM_MI: [i64; 2] = [16384, 32768];
const TINY_CPU: [i64; 2] = [100, 250];
const TINY_MEM_MI: [i64; 2] = [128, 256];

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 3] = [Shape::UniformSmall, Shape::Mixed, Shape::Bimodal];

    /// The name used on the command line (`uniform-small`, `mixed`, `bimodal`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Shape::UniformSmall => "uniform-small",
            Shape::Mixed => "mixed",
            Shape::Bimodal => "bimodal",
        }
    }

    /// One deployment's (millicores, MiB).
    fn draw(self, rng: &mut Rng) -> (i64, i64) {
        let pick = |rng: &mut Rng, menu: &[i64]| menu[rng.below(menu.len())];
        match self {
            Shape::UniformSmall => (pick(rng, &SMALL_CPU), pick(rng, &SMALL_MEM_MI)),
            Shape::Mixed => {
                if rng.below(2) == 0 {
                    let cpu = pick(rng, &CPU_HEAVY_CPU);
                    (cpu, cpu * 1024 / 1000)
                } else {
                    (pick(rng, &MEM_HEAVY_CPU), pick(rng, &MEM_HEAVY_MEM_MI))
                }
            }
            Shape::Bimodal => {
                if rng.unit() < 0.1 {
                    (pick(rng, &BIG_CPU), pick(rng, &BIG_MEM_MI))
                } else {
                    (pick(rng, &TINY_CPU), pick(rng, &TINY_MEM_MI))
                }
            }
        }
    }

    /// `count` pending pods, in deployments of 1–[`MAX_REPLICAS`] identical replicas named
    /// `<shape>-<deployment>-<replica>`.
    #[must_use]
    pub fn pods(self, count: usize, rng: &mut Rng) -> Vec<Pod> {
        let mut out = Vec::with_capacity(count);
        let mut deployment = 0;
        while out.len() < count {
            let (cpu, mem) = self.draw(rng);
            let replicas = (1 + rng.below(MAX_REPLICAS)).min(count - out.len());
            for r in 0..replicas {
                out.push(
                    pod(&format!("{}-{deployment}-{r}", self.name()))
                        .cpu(&format!("{cpu}m"))
                        .memory(&format!("{mem}Mi"))
                        .build(),
                );
            }
            deployment += 1;
        }
        out
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Shape::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown shape {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_deterministic_and_sized() {
        for s in Shape::ALL {
            let a = s.pods(777, &mut Rng::new(9));
            assert_eq!(a.len(), 777);
            assert_eq!(a, s.pods(777, &mut Rng::new(9)));
        }
    }

    #[test]
    fn bimodal_has_few_big_pods() {
        let pods = Shape::Bimodal.pods(5000, &mut Rng::new(2));
        let big = pods.iter().filter(|p| p.requests.cpu >= 4000).count();
        assert!((200..1000).contains(&big), "{big} big pods");
    }
}
