//! Endpoints and deployments at run time: the routing table the front ends
//! read on every request, the reconciler that keeps it equal to the
//! registry's desired state (hot swaps included), mirrored traffic, and
//! safe rollouts.
//!
//! - [`routing`]: endpoints, weights, pinning; lock-free reads.
//! - [`deployer`]: loading, warming up and swapping versions.
//! - [`mirror`]: bounded, fire-and-forget copies to a shadow deployment.
//! - [`rollout`]: step-by-step traffic shifts with automatic rollback.
//! - [`stats`]: each deployment's own error count and latency histogram.
//! - [`drift`]: the drift monitor of a version with a training baseline.
//! - [`warmup`]: the samples a version answers before it goes live.
//! - [`config`]: `serve --config deploy.toml`.

mod capture;
pub mod config;
pub mod deployer;
pub mod drift;
pub mod mirror;
pub mod rollout;
pub mod routing;
pub mod stats;
pub mod warmup;

pub use deployer::{DeployError, Deployer};
pub use routing::{Routed, RoutingTable, DEPLOYMENT_HEADER};
