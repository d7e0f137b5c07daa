//! Pods sampled from public workload traces (Alibaba Cluster Trace Program).
//!
//! Two traces, read from CSV:
//!
//! - **v2017 batch tasks** (`alibaba_v2017_batch_tasks.csv`): each task launches `instances`
//!   identical pods of `cpu_millicores` and `memory_mib_est`. CPU-only, many identical replicas.
//! - **GPU v2023 pods** (`alibaba_gpu_v2023_pods.csv`): one row per pod with `cpu_millicores`,
//!   `memory_mib` and `gpu_count` (whole `nvidia.com/gpu`; fractional GPU sharing is not modelled).
//!
//! Small derived samples of both files are embedded ([`V2017_SAMPLE`], [`GPU_V2023_SAMPLE`], see
//! `benches/data/README.md`), so the benches run on a fresh clone; [`Traces::load`] reads the full
//! files from a data directory instead when one is given.
//!
//! ```
//! use karp_benches::traces::Traces;
//! use karp_benches::Rng;
//!
//! let traces = Traces::embedded().unwrap();
//! let pods = traces.sample_v2017(500, &mut Rng::new(7));
//! assert_eq!(pods.len(), 500);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use karp_core::pod::Pod;
use karp_core::testing::pod;

use crate::Rng;

/// The embedded sample of the v2017 batch-task trace (every 7th task of the shared copy).
pub const V2017_SAMPLE: &str = include_str!("../data/alibaba_v2017_batch_tasks_sample.csv");

/// The embedded GPU v2023 pod trace (all 8 152 pods, four columns plus creation and deletion times).
pub const GPU_V2023_SAMPLE: &str = include_str!("../data/alibaba_gpu_v2023_pods_sample.csv");

/// File name of the full v2017 batch-task trace in a data directory.
pub const V2017_FILE: &str = "alibaba_v2017_batch_tasks.csv";

/// File name of the full GPU v2023 pod trace in a data directory.
pub const GPU_V2023_FILE: &str = "alibaba_gpu_v2023_pods.csv";

/// Environment variable naming the directory of the full trace files.
pub const DATA_DIR_ENV: &str = "KARP_DATA_DIR";

/// At most this many pods of one v2017 task go into a sample, so a sample is never one giant task.
pub const MAX_PODS_PER_TASK: u64 = 100;

/// A trace file that could not be read or parsed.
#[derive(Debug)]
pub struct TraceError {
    /// The file (or embedded sample) name.
    pub file: String,
    /// 1-based line number, when the problem is in one line.
    pub line: Option<usize>,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "trace {} line {l}: {}", self.file, self.reason),
            None => write!(f, "trace {}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for TraceError {}

/// One v2017 batch task: `instances` identical pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTask {
    /// `j<job>-t<task>`.
    pub task_id: String,
    /// Number of identical pods the task launches.
    pub instances: u64,
    /// CPU request per pod, millicores.
    pub cpu_millicores: i64,
    /// Memory request per pod, MiB (an estimate; see the data README).
    pub memory_mib: i64,
}

/// One GPU v2023 pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPod {
    /// Trace pod id.
    pub pod_id: String,
    /// CPU request, millicores.
    pub cpu_millicores: i64,
    /// Memory request, MiB.
    pub memory_mib: i64,
    /// Whole GPUs (`nvidia.com/gpu`), 0–8.
    pub gpu_count: i64,
}

/// A minimal CSV reader for these files (no quoting: the trace cells never contain commas).
pub(crate) fn rows<'a>(
    file: &str,
    text: &'a str,
    wanted: &[&str],
) -> Result<Vec<(usize, Vec<&'a str>)>, TraceError> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = lines
        .next()
        .map(|(_, h)| h.trim_end_matches('\r').split(',').collect())
        .unwrap_or_default();
    let mut cols = Vec::with_capacity(wanted.len());
    for w in wanted {
        let c = header
            .iter()
            .position(|h| h == w)
            .ok_or_else(|| TraceError {
                file: file.to_string(),
                line: Some(1),
                reason: format!("no column {w:?} in the header"),
            })?;
        cols.push(c);
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        let picked = cols
            .iter()
            .map(|&c| {
                cells.get(c).copied().ok_or_else(|| TraceError {
                    file: file.to_string(),
                    line: Some(i + 1),
                    reason: format!("expected {} cells, found {}", header.len(), cells.len()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((i + 1, picked));
    }
    Ok(out)
}

fn int(file: &str, line: usize, column: &str, cell: &str) -> Result<i64, TraceError> {
    cell.parse().map_err(|_| TraceError {
        file: file.to_string(),
        line: Some(line),
        reason: format!("{column}: not an integer: {cell:?}"),
    })
}

/// Parse the v2017 batch-task CSV (the full file or the sample; extra columns are ignored).
///
/// # Errors
/// [`TraceError`] naming the line of a missing column or a cell that is not an integer.
pub fn parse_v2017(file: &str, text: &str) -> Result<Vec<BatchTask>, TraceError> {
    let cols = ["task_id", "instances", "cpu_millicores", "memory_mib_est"];
    rows(file, text, &cols)?
        .into_iter()
        .map(|(line, c)| {
            Ok(BatchTask {
                task_id: c[0].to_string(),
                instances: int(file, line, cols[1], c[1])?.max(0) as u64,
                cpu_millicores: int(file, line, cols[2], c[2])?,
                memory_mib: int(file, line, cols[3], c[3])?,
            })
        })
        .collect()
}

/// Parse the GPU v2023 pod CSV (the full file or the sample; extra columns are ignored).
///
/// # Errors
/// [`TraceError`] naming the line of a missing column or a cell that is not an integer.
pub fn parse_gpu_v2023(file: &str, text: &str) -> Result<Vec<GpuPod>, TraceError> {
    let cols = ["pod_id", "cpu_millicores", "memory_mib", "gpu_count"];
    rows(file, text, &cols)?
        .into_iter()
        .map(|(line, c)| {
            Ok(GpuPod {
                pod_id: c[0].to_string(),
                cpu_millicores: int(file, line, cols[1], c[1])?,
                memory_mib: int(file, line, cols[2], c[2])?,
                gpu_count: int(file, line, cols[3], c[3])?,
            })
        })
        .collect()
}

/// Both traces, parsed once. Rows without any CPU or memory request are dropped.
#[derive(Debug, Clone)]
pub struct Traces {
    /// Where the rows came from (`embedded samples` or a directory).
    pub source: String,
    /// v2017 batch tasks, in file order.
    pub v2017: Vec<BatchTask>,
    /// GPU v2023 pods, in file order.
    pub gpu_v2023: Vec<GpuPod>,
}

impl Traces {
    /// The embedded samples (`benches/data/`).
    ///
    /// # Errors
    /// Only if the embedded files were edited into something unparsable.
    pub fn embedded() -> Result<Self, TraceError> {
        Ok(Self::new(
            "embedded samples (benches/data)".into(),
            parse_v2017("alibaba_v2017_batch_tasks_sample.csv", V2017_SAMPLE)?,
            parse_gpu_v2023("alibaba_gpu_v2023_pods_sample.csv", GPU_V2023_SAMPLE)?,
        ))
    }

    /// The full trace files [`V2017_FILE`] and [`GPU_V2023_FILE`] in `dir`.
    ///
    /// # Errors
    /// [`TraceError`] when a file cannot be read or parsed.
    pub fn from_dir(dir: &Path) -> Result<Self, TraceError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TraceError {
                file: path.display().to_string(),
                line: None,
                reason: e.to_string(),
            })
        };
        Ok(Self::new(
            dir.display().to_string(),
            parse_v2017(V2017_FILE, &read(V2017_FILE)?)?,
            parse_gpu_v2023(GPU_V2023_FILE, &read(GPU_V2023_FILE)?)?,
        ))
    }

    /// The full files in `dir` when given, else the embedded samples.
    ///
    /// # Errors
    /// As [`Traces::from_dir`].
    pub fn load(dir: Option<&Path>) -> Result<Self, TraceError> {
        match dir {
            Some(d) => Self::from_dir(d),
            None => Self::embedded(),
        }
    }

    /// The data directory named by [`DATA_DIR_ENV`], if set and not empty. (The shared copy of
    /// the team lives at `../shared/data` relative to the workspace root.)
    #[must_use]
    pub fn dir_from_env() -> Option<PathBuf> {
        std::env::var_os(DATA_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    fn new(source: String, mut v2017: Vec<BatchTask>, mut gpu_v2023: Vec<GpuPod>) -> Self {
        v2017.retain(|t| t.instances > 0 && (t.cpu_millicores > 0 || t.memory_mib > 0));
        gpu_v2023.retain(|p| p.cpu_millicores > 0 || p.memory_mib > 0);
        Traces {
            source,
            v2017,
            gpu_v2023,
        }
    }

    /// `n` pending pods from the v2017 trace: tasks drawn uniformly without replacement, each
    /// contributing `min(instances, MAX_PODS_PER_TASK, pods still missing)` identical pods named
    /// `<task_id>-<i>` (no labels, so identical pods of a task are interchangeable).
    ///
    /// Returns fewer than `n` pods only if the whole trace has fewer.
    #[must_use]
    pub fn sample_v2017(&self, n: usize, rng: &mut Rng) -> Vec<Pod> {
        let mut order: Vec<usize> = (0..self.v2017.len()).collect();
        let mut out = Vec::with_capacity(n);
        let mut drawn = 0;
        while out.len() < n && drawn < order.len() {
            let j = drawn + rng.below(order.len() - drawn);
            order.swap(drawn, j);
            let task = &self.v2017[order[drawn]];
            drawn += 1;
            let take = task
                .instances
                .min(MAX_PODS_PER_TASK)
                .min((n - out.len()) as u64);
            for i in 0..take {
                out.push(
                    pod(&format!("{}-{i}", task.task_id))
                        .cpu(&format!("{}m", task.cpu_millicores))
                        .memory(&format!("{}Mi", task.memory_mib))
                        .build(),
                );
            }
        }
        out
    }

    /// `n` pending pods from the GPU v2023 trace, drawn uniformly without replacement, named after
    /// their trace id; `gpu_count > 0` becomes that many `nvidia.com/gpu`.
    ///
    /// Returns fewer than `n` pods only if the trace has fewer.
    #[must_use]
    pub fn sample_gpu_v2023(&self, n: usize, rng: &mut Rng) -> Vec<Pod> {
        let mut order: Vec<usize> = (0..self.gpu_v2023.len()).collect();
        let n = n.min(order.len());
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let j = k + rng.below(order.len() - k);
            order.swap(k, j);
            let p = &self.gpu_v2023[order[k]];
            let mut b = pod(&p.pod_id)
                .cpu(&format!("{}m", p.cpu_millicores))
                .memory(&format!("{}Mi", p.memory_mib));
            if p.gpu_count > 0 {
                b = b.resource(crate::aws::NVIDIA_GPU, &p.gpu_count.to_string());
            }
            out.push(b.build());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_samples_parse() {
        let t = Traces::embedded().unwrap();
        assert!(t.v2017.len() > 10_000);
        assert_eq!(t.gpu_v2023.len(), 8152);
    }

    #[test]
    fn a_v2017_sample_is_deterministic_and_caps_each_task() {
        let t = Traces::embedded().unwrap();
        let a = t.sample_v2017(2000, &mut Rng::new(1));
        let b = t.sample_v2017(2000, &mut Rng::new(1));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2000);
        let mut per_task = std::collections::BTreeMap::<&str, u64>::new();
        for p in &a {
            let task = p.name.rsplit_once('-').unwrap().0;
            *per_task.entry(task).or_default() += 1;
        }
        assert!(per_task.values().all(|&c| c <= MAX_PODS_PER_TASK));
    }

    #[test]
    fn gpu_pods_ask_for_whole_gpus() {
        let t = Traces::embedded().unwrap();
        let pods = t.sample_gpu_v2023(1000, &mut Rng::new(3));
        assert_eq!(pods.len(), 1000);
        let gpus: i64 = pods
            .iter()
            .map(|p| {
                p.requests
                    .extended
                    .get(crate::aws::NVIDIA_GPU)
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        assert!(gpus >= 700, "most trace pods use a GPU, got {gpus}");
    }

    #[test]
    fn a_missing_column_names_the_file() {
        let e = parse_v2017("x.csv", "task_id,instances\nj1-t1,3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "trace x.csv line 1: no column \"cpu_millicores\" in the header"
        );
    }
}
