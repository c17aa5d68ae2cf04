//! The serving layer of ferroserve (DESIGN.md's "server"): what turns loaded
//! models into a network service.
//!
//! The request path: [`listener`] accepts a connection (limits, TLS,
//! [`auth`]); [`http`] or [`grpc`] decodes the request with
//! `ferroserve-protocol`; [`endpoints`] routes it to a deployment (pinned or
//! weighted, maybe mirrored); the deployment's `ferroserve_runtime::Model`
//! validates, batches and runs it; the front end encodes the answer and
//! records [`metrics`]. Triton's [`extensions`] (model configuration,
//! statistics, repository index) are answered the same over both protocols.
//! [`events`] delivers the registry's lifecycle events to server-sent-event
//! streams and webhooks. [`state`] is what the handlers share.
//!
//! This crate must not know the command line: the `ferroserve` binary parses
//! arguments and builds what is here.

pub mod auth;
pub mod endpoints;
pub mod events;
pub mod extensions;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod state;
pub mod tls;
