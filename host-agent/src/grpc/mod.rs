//! The agent's gRPC side: the `HostAgent` service it serves to the control plane (mutual TLS,
//! control plane's certificate required), the blob source it fetches images from, and the
//! proto ⇄ domain conversions. No other module sees proto types.

pub mod blobs;
pub mod convert;
mod service;

pub use service::{AgentService, serve};
