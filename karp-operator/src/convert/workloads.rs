//! Workloads → their replicas: a Deployment, ReplicaSet, StatefulSet or Job read from manifests
//! becomes the pods it would create, named `<owner>-<index>` (a live cluster has the real pods, so
//! the operator passes none).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1 as corev1;
use karp_core::pod::Pod;

use super::pod::{convert_pod, owned_by, PodInput, Volumes};
use super::{field_err, ConvertError, ObjectRef};

/// The most pods one workload may expand to in a plan (a simulation of more would only exhaust
/// memory; real clusters stay far below it).
pub const MAX_REPLICAS: i32 = 100_000;

/// A workload whose pods are simulated from its template.
#[derive(Debug, Clone)]
pub enum Workload {
    /// `apps/v1` Deployment.
    Deployment(Box<Deployment>),
    /// `apps/v1` ReplicaSet.
    ReplicaSet(Box<ReplicaSet>),
    /// `apps/v1` StatefulSet.
    StatefulSet(Box<StatefulSet>),
    /// `batch/v1` Job.
    Job(Box<Job>),
}

fn replicas(origin: &ObjectRef, r: Option<i32>) -> Result<i32, ConvertError> {
    match r {
        Some(n) if n < 0 => Err(field_err(
            origin,
            "spec.replicas",
            format!("must not be negative, got {n}"),
        )),
        Some(n) if n > MAX_REPLICAS => Err(field_err(
            origin,
            "spec.replicas",
            format!("{n} is more than the {MAX_REPLICAS} pods karp plan simulates per workload"),
        )),
        Some(n) => Ok(n),
        None => Ok(1),
    }
}

/// How many pods a Job runs at once: parallelism, at most the completions, none when suspended.
fn job_pods(origin: &ObjectRef, job: &Job) -> Result<i32, ConvertError> {
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| field_err(origin, "spec", "required"))?;
    let mut n = spec.parallelism.unwrap_or(1);
    if n < 0 {
        return Err(field_err(
            origin,
            "spec.parallelism",
            format!("must not be negative, got {n}"),
        ));
    }
    if let Some(c) = spec.completions {
        if c < 0 {
            return Err(field_err(
                origin,
                "spec.completions",
                format!("must not be negative, got {c}"),
            ));
        }
        n = n.min(c);
    }
    if n > MAX_REPLICAS {
        return Err(field_err(
            origin,
            "spec.parallelism",
            format!("{n} is more than the {MAX_REPLICAS} pods karp plan simulates per workload"),
        ));
    }
    Ok(if spec.suspend == Some(true) { 0 } else { n })
}

/// A template converted once and cloned `count` times as `<owner>-<index>`, with the labels the
/// workload's controller adds to each replica.
fn expand(
    origin: &ObjectRef,
    template: &corev1::PodTemplateSpec,
    count: i32,
    extra_labels: impl Fn(&str, i32) -> Vec<(String, String)>,
    volumes: &Volumes,
) -> Result<Vec<Pod>, ConvertError> {
    let Some(spec) = &template.spec else {
        return Err(field_err(origin, "spec.template.spec", "required"));
    };
    let namespace = origin.namespace.clone().unwrap_or_else(|| "default".into());
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let base = convert_pod(
        origin,
        &PodInput {
            namespace: &namespace,
            name: &origin.name,
            labels,
            spec,
            path: "spec.template.spec",
        },
        volumes,
    )?;
    let mut pods = Vec::with_capacity(usize::try_from(count.max(0)).unwrap_or_default());
    for i in 0..count.max(0) {
        let mut pod = base.clone();
        pod.name = format!("{}-{i}", origin.name);
        pod.node_name = None;
        for (k, v) in extra_labels(&pod.name, i) {
            pod.labels.insert(k, v);
        }
        pods.push(pod);
    }
    Ok(pods)
}

/// The pods a workload would run. A ReplicaSet whose Deployment is also in the input (in
/// `deployments`, as `(namespace, name)`) is the Deployment's: it yields nothing and a warning.
///
/// # Errors
/// [`ConvertError::ConvertField`] for a missing template, a negative or too large count, or a
/// template field that does not convert.
pub(crate) fn workload_pods(
    origin: &ObjectRef,
    workload: &Workload,
    deployments: &BTreeSet<(String, String)>,
    volumes: &Volumes,
    warnings: &mut Vec<String>,
) -> Result<Vec<Pod>, ConvertError> {
    let none = |_: &str, _: i32| Vec::new();
    match workload {
        Workload::Deployment(d) => {
            let n = replicas(origin, d.spec.replicas)?;
            expand(origin, &d.spec.template, n, none, volumes)
        }
        Workload::ReplicaSet(rs) => {
            let ns = origin.namespace.clone().unwrap_or_default();
            if let Some(owner) = owned_by(&rs.metadata, "Deployment")
                .filter(|d| deployments.contains(&(ns.clone(), d.clone())))
            {
                warnings.push(format!(
                    "{origin}: skipping: its pods come from Deployment {ns}/{owner}"
                ));
                return Ok(Vec::new());
            }
            let n = replicas(origin, rs.spec.replicas)?;
            let template = rs
                .spec
                .template
                .as_ref()
                .ok_or_else(|| field_err(origin, "spec.template", "required"))?;
            expand(origin, template, n, none, volumes)
        }
        Workload::StatefulSet(s) => {
            let n = replicas(origin, s.spec.replicas)?;
            let labels = |name: &str, i: i32| {
                vec![
                    (
                        "statefulset.kubernetes.io/pod-name".to_string(),
                        name.to_string(),
                    ),
                    ("apps.kubernetes.io/pod-index".to_string(), i.to_string()),
                ]
            };
            expand(origin, &s.spec.template, n, labels, volumes)
        }
        Workload::Job(j) => {
            let n = job_pods(origin, j)?;
            let job = origin.name.clone();
            let labels = move |_: &str, _: i32| {
                vec![
                    ("batch.kubernetes.io/job-name".to_string(), job.clone()),
                    ("job-name".to_string(), job.clone()),
                ]
            };
            let template = &j.spec.as_ref().map(|s| &s.template);
            let template = template.ok_or_else(|| field_err(origin, "spec", "required"))?;
            expand(origin, template, n, labels, volumes)
        }
    }
}
