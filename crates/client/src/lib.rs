//! A typed async client for a Verdict node's HTTP API (`docs/api.md`).
//!
//! Layout:
//! - [`Client`] (`client.rs`): one method per endpoint; writes return the committed version.
//! - [`Error`] (`error.rs`): problem answers, transport failures, undecodable answers.
//! - `types.rs`: request and response bodies as serde structs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), verdict_client::Error> {
//! use verdict_client::{Action, Client, EvaluationRequest, Resource, Subject};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let v = client
//!     .put_policy("p1", r#"permit(principal, action, resource);"#, None, None)
//!     .await?;
//! let req = EvaluationRequest::new(
//!     Subject::new("User", "alice"),
//!     Action::new("view"),
//!     Resource::new("Doc", "d1"),
//! );
//! // Read-your-writes: ask for a snapshot at least as new as the write.
//! let answer = client.evaluation(&req, Some(v)).await?;
//! assert!(answer.body.decision);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod client;
mod cluster;
mod error;
mod types;

pub use client::Client;
pub use error::Error;
pub use error::Location;
pub use types::*;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
