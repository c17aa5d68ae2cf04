//! The lifecycle event types, `io.ferroserve.<object>.<what happened>`: the
//! CloudEvent `type` on the event bus and the action recorded in the audit
//! log are the same names.

/// A new model version was registered. Data: model, version, registered_by.
pub const MODEL_REGISTERED: &str = "io.ferroserve.model.registered";
/// An alias now points at another version. Data: model, alias, from, to.
pub const ALIAS_MOVED: &str = "io.ferroserve.alias.moved";
/// A model version was deleted. Data: model, version.
pub const VERSION_DELETED: &str = "io.ferroserve.version.deleted";
/// A model version started being served. Emitted today by `serve` at
/// start-up for every model it serves (data: model, version, backend,
/// instances, reason = "startup").
pub const DEPLOYMENT_CREATED: &str = "io.ferroserve.deployment.created";
/// A deployment changed (version, instances).
pub const DEPLOYMENT_UPDATED: &str = "io.ferroserve.deployment.updated";
/// A deployment stopped being served (removed from its endpoint). Data:
/// endpoint, deployment, model, version.
pub const DEPLOYMENT_DELETED: &str = "io.ferroserve.deployment.deleted";
/// A deployment could not be created or updated. Data includes `error`.
pub const DEPLOYMENT_FAILED: &str = "io.ferroserve.deployment.failed";
/// Traffic weights between versions changed.
pub const TRAFFIC_CHANGED: &str = "io.ferroserve.traffic.changed";
/// An endpoint's desired state changed in the registry (deploy,
/// undeploy, traffic, configuration). Data: op, before, after.
pub const ENDPOINT_CHANGED: &str = "io.ferroserve.endpoint.changed";
/// A safe rollout finished: every step passed. Data: endpoint, to, steps.
pub const ROLLOUT_COMPLETED: &str = "io.ferroserve.rollout.completed";
/// A safe rollout broke its budget and traffic went back. Data:
/// endpoint, to, step, reason, and the measured error rate and p99.
pub const ROLLOUT_ROLLED_BACK: &str = "io.ferroserve.rollout.rolled_back";
/// A feature of a deployment's inputs or outputs crossed its drift
/// threshold in the last window (once per crossing). Data: endpoint,
/// deployment, model, version, side, feature, method, score, threshold,
/// window.
pub const DRIFT_DETECTED: &str = "io.ferroserve.drift.detected";
/// A drifted feature is back within its threshold. Data as for
/// [`DRIFT_DETECTED`].
pub const DRIFT_RESOLVED: &str = "io.ferroserve.drift.resolved";
