//! What a store needs to know about the write it executes: its version, stamped time, `If-Match`,
//! and whether it is checked or applied (with the parse cache between the two).

use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::parse_cache::ParseCache;

/// Whether a write is applied for real or only checked before it is proposed, and the parse cache
/// that carries parsed policies from the one to the other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// Checked before proposing: parses are remembered, and steps that cannot fail may be
    /// skipped, since the resulting state is discarded.
    Check(&'a ParseCache),
    /// Applied from the log: a parse remembered by the check is reused.
    Apply(&'a ParseCache),
}

/// What every store method needs to know about the write it executes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteContext<'a> {
    /// The log index the write is applied at.
    pub version: u64,
    /// The leader's stamped time (apply never reads a clock).
    pub stamped_ms: u64,
    /// `If-Match`: the version the named resource must still have (0 = must not exist).
    pub if_match: Option<u64>,
    /// Checked or applied.
    pub mode: Mode<'a>,
}

impl WriteContext<'_> {
    /// Whether this is only a check (its state is thrown away).
    pub fn is_check(&self) -> bool {
        matches!(self.mode, Mode::Check(_))
    }

    /// Refuses the write unless `If-Match` is absent or equals `current`, the version of `what`.
    pub fn check_if_match(&self, what: &str, current: u64) -> Result<(), EngineError> {
        let Some(expected) = self.if_match else {
            return Ok(());
        };
        if current == expected {
            return Ok(());
        }
        Err(EngineError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "If-Match: {expected} does not match: {what} is at version {current}; \
                 GET it again, re-apply your change and retry with the new version"
            ),
        ))
    }

    /// Refuses `If-Match` on writes it has no meaning for; `why` finishes the sentence.
    pub fn refuse_if_match(&self, why: &str) -> Result<(), EngineError> {
        if self.if_match.is_none() {
            return Ok(());
        }
        Err(EngineError::new(
            ErrorCode::InvalidRequest,
            format!("`If-Match` does not apply to {why}; send the request without it"),
        ))
    }
}

impl Mode<'_> {
    /// Parses one policy through the parse cache: remembered when checking, reused when applying.
    pub fn parse_policy(
        &self,
        id: &str,
        text: &str,
        version: u64,
    ) -> Result<std::sync::Arc<crate::policy::StoredPolicy>, EngineError> {
        match self {
            Self::Check(cache) => cache.parse_and_remember(id, text, version),
            Self::Apply(cache) => cache.take_or_parse(id, text, version),
        }
    }
}
