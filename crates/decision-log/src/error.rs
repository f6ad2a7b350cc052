//! Errors, one enum per operation, each variant saying what to do about it.

use std::path::PathBuf;

/// Opening the decision log failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is inconsistent; the message names the field.
    #[error("decision log configuration: {0}")]
    Config(String),
    /// The queue or cursor directory cannot be read or written.
    #[error("cannot open the decision log in `{}`: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
}

/// An append failed: the record is not logged. Under an audit-grade configuration the decision
/// should fail too (503).
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `when_full = "block"` and no sink freed space in time.
    #[error(
        "the decision log is full and no sink freed space within {waited_ms} ms; check the sinks' \
         `last_error` in the decision-log status"
    )]
    Full {
        /// How long the append waited.
        waited_ms: u64,
    },
    /// `fsync = "always"` and the record was not fsynced in time (the disk is failing or slow).
    /// It may still become durable later.
    #[error("the decision log did not make the record durable within {waited_ms} ms")]
    NotDurable {
        /// How long the append waited.
        waited_ms: u64,
    },
    /// The serialised record exceeds the frame limit.
    #[error("the record is {bytes} bytes, more than the decision log's limit of {limit}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The record could not be serialised.
    #[error("cannot serialise the record: {0}")]
    Encode(#[from] serde_json::Error),
    /// [`crate::DecisionLog::shutdown`] was called.
    #[error("the decision log is shut down")]
    Closed,
}

/// Shutdown finished, but not everything reached the disk.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The writer could not write its last batch; those records are counted as `write_failed`.
    #[error("the decision log could not write its last records: {0}")]
    WriteFailed(String),
    /// The writer thread stopped abnormally.
    #[error("the decision log writer thread panicked")]
    WriterPanicked,
}
