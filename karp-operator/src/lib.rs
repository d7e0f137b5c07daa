//! # karp-operator
//!
//! The `karp` binary's library: the command line ([`cli`]) and `karp plan`, which reads Kubernetes
//! manifests ([`manifests`]), converts them once into karp-core's snapshot ([`convert`]), runs the
//! scheduler and prints the plan ([`plan`]).
//!
//! `karp catalog` ([`catalog`]) writes the instance-type catalog of a live EC2 API in the same file
//! format `karp plan --catalog` reads.
//!
//! Entry points for programs and fuzz targets: [`plan::plan_paths`] (files and folders) and
//! [`plan::plan_documents`] (raw manifest text). Neither panics on any input; bad input is a
//! [`plan::PlanError`] naming the file, the object and the field.

pub mod catalog;
pub mod chart;
pub mod cli;
pub mod convert;
pub mod crds;
pub mod demo;
pub mod embedded;
pub mod embedded_aws;
pub mod manifests;
pub mod nodepool;
pub mod operator;
pub mod plan;
pub mod run;
