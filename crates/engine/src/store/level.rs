//! The cluster's active format level: which persisted and wire formats members may write
//! (docs/operations.md, "Format levels"). Part of the replicated state, so every member agrees on
//! it at every version; raised by one log entry, never lowered. A state that was never raised is
//! at level 1, the formats of the release before levels existed.

use crate::change::ChangeSet;
use crate::error::EngineError;
use crate::error::ErrorCode;
use crate::store::context::WriteContext;

/// The active level; `0` stands for "never raised", which is level 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveLevel(u8);

impl ActiveLevel {
    /// The active level (1 for a state that was never raised).
    pub fn get(self) -> u8 {
        self.0.max(1)
    }

    /// The level `level` (as a snapshot file records it).
    pub fn at(level: u8) -> Self {
        Self(level)
    }

    /// `RaiseLevel`: only upwards. Whether every member supports `level` is checked before the
    /// entry is proposed; apply only keeps the level from going down, deterministically.
    pub(crate) fn raise(
        &mut self,
        level: u8,
        at: &WriteContext<'_>,
    ) -> Result<ChangeSet, EngineError> {
        at.refuse_if_match("raising the format level")?;
        if level <= self.get() {
            return Err(EngineError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the cluster is already at format level {}; levels are only raised",
                    self.get()
                ),
            ));
        }
        self.0 = level;
        Ok(ChangeSet::default())
    }

    /// Refuses a command that needs `level` while the cluster is below it.
    pub(crate) fn require(self, level: u8, what: &str) -> Result<(), EngineError> {
        if self.get() >= level {
            return Ok(());
        }
        Err(EngineError::new(
            ErrorCode::FeatureNotActive,
            format!(
                "`{what}` needs format level {level}; the cluster is at level {}: upgrade every \
                 member and finalise the upgrade (`verdict cluster upgrade finalize`)",
                self.get()
            ),
        ))
    }
}
