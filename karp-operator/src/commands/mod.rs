//! The subcommands of `karp`, one module each; [`crate::cli`] parses the flags and calls them.

pub mod catalog;
#[cfg(feature = "embedded")]
pub mod demo;
pub mod disrupt;
pub mod imds_monitor;
pub mod plan;
pub mod run;
