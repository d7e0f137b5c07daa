//! # karp-operator
//!
//! The `karp` binary's library, laid out by role:
//!
//! - [`cli`]: flag parsing and dispatch; [`commands`]: one module per subcommand (`plan`,
//!   `catalog`, `run`, `demo` / `cluster`).
//! - [`api`]: the Kubernetes API types karp serves and reads (Karpenter's v1 CRDs).
//! - [`convert`]: Kubernetes objects → karp-core's snapshot, once, at the edge: manifests for
//!   `karp plan`, live objects for the controllers, through one builder.
//! - [`controllers`]: the operator's reconcile loops; each decides in a pure function and acts
//!   in a small executor. [`runtime`]: what runs around them (leader election, metrics, health).
//! - [`providers`]: the cloud-specific side (node-class resolution, instance-type catalogs).
//! - [`embedded`] (feature `embedded`, on by default): the in-process cluster behind `karp demo`,
//!   `karp cluster` and the end-to-end tests.
//!
//! Entry points for programs and fuzz targets: [`commands::plan::plan_paths`] (files and folders)
//! and [`commands::plan::plan_documents`] (raw manifest text). Neither panics on any input; bad
//! input is a [`commands::plan::PlanError`] naming the file, the object and the field.
//!
//! docs/architecture.md draws the data flow of provisioning and termination.

pub mod api;
pub mod cli;
pub mod commands;
pub mod controllers;
pub mod convert;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod providers;
pub mod runtime;
