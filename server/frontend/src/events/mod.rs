//! Where the registry's lifecycle events leave the process: the server-sent
//! event stream of `/v2/admin/events` ([`sse`]) and webhooks ([`webhook`]).
//! The bus itself (`ferroserve_registry::events`) knows neither.

pub mod signature;
pub mod sse;
pub mod webhook;
