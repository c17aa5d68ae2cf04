//! What the request handlers of both front ends share: a handful of `Arc`s
//! in one struct, built once by `serve` and read by every request.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferroserve_registry::events::EventBus;

use crate::endpoints::rollout::Rollouts;
use crate::endpoints::{Deployer, RoutingTable};
use crate::metrics::Metrics;

/// What request handlers share: a handful of `Arc`s, no god object.
pub struct AppState {
    /// What each endpoint name reaches now.
    pub routes: Arc<RoutingTable>,
    /// Changes the routing table (hot swaps); `None` where nothing may
    /// change it (tests of a fixed table).
    pub deployer: Option<Arc<Deployer>>,
    pub rollouts: Arc<Rollouts>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpLimits,
    /// Goes false the moment shutdown starts, so load balancers stop sending.
    pub ready: AtomicBool,
    /// Lifecycle events: emit here; `/v2/admin/events` streams them.
    pub events: EventBus,
    /// Interval of the keep-alive comments on `/v2/admin/events`.
    pub events_keepalive: Duration,
    /// The repository served from: the management routes
    /// (`/v2/admin/models...`) read and write its registry. `None`: those
    /// routes answer 503.
    pub repo: Option<PathBuf>,
    /// Largest bundle upload (`POST /v2/admin/models/{name}/versions`),
    /// compressed and uncompressed alike; larger gets 413.
    pub max_upload_bytes: usize,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Limits applied to every HTTP request. Connection-level limits (header
/// read and idle timeouts, connection count, HTTP/2 settings) are the
/// listener's: see [`crate::listener::ConnLimits`].
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Bodies larger than this are refused with 413 before being read.
    pub max_body_bytes: usize,
    /// A body that has not fully arrived this long after its headers gets
    /// 408: the header read timeout does not cover a client that trickles
    /// the body instead.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 64 << 20,
            body_read_timeout: Duration::from_secs(60),
        }
    }
}
