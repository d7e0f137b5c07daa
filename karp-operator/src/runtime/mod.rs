//! What runs around the controllers in one `karp run` process: leader election on a Lease
//! ([`leader`]), Prometheus metrics ([`metrics`]) and the `/metrics`, `/healthz`, `/readyz`
//! endpoints ([`health`]); the advanceable [`clock`] of the disruption decisions.

pub mod clock;
pub mod health;
pub mod leader;
pub mod metrics;
