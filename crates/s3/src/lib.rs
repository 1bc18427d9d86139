//! The S3-compatible HTTP gateway: S3 requests in (through the `s3s`
//! protocol layer: routing, XML, SigV4), tessera-sdk calls out. It owns
//! the mapping between S3 operations and errors and Tessera's, and the
//! check of access keys' grants; it must not hold storage logic: bytes
//! stream straight between the HTTP body and the SDK.
//!
//! Where `s3s` falls short, the workaround lives in this crate and is
//! written down in ARCHITECTURE.md.

mod access;
mod acl;
mod checksum;
mod cors;
mod edge;
mod gateway;
mod lifecycle;
mod lock;
mod package;
mod policy;
mod prefetch;
mod rules;
mod sse;

pub use edge::keep_log_event;
pub use gateway::{Gateway, GatewayConfig, router};
pub use sse::{MasterKey, SseError};
