//! What one applied write changed, by kind and id: the stores say it as they execute a command, so
//! a reader (the watch stream) never re-derives it from the command.

use cedar_policy::EntityUid;

/// The ids of one kind of data that a write changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed<T> {
    /// These ids were written or removed (none: the kind did not change).
    Ids(Vec<T>),
    /// The whole kind was replaced: every id may have changed.
    All,
}

impl<T> Default for Changed<T> {
    fn default() -> Self {
        Self::Ids(Vec::new())
    }
}

impl<T> Changed<T> {
    /// Whether nothing of this kind changed.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::Ids(ids) if ids.is_empty())
    }
}

/// Everything one write changed. Empty for a write that was refused, a duplicate, or a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Policies written or deleted, by id.
    pub policies: Changed<String>,
    /// Entities written or deleted, by uid. Descendants whose ancestor closure moved with them are
    /// not listed: their stored attributes and parents did not change.
    pub entities: Changed<EntityUid>,
    /// The schema was set or removed.
    pub schema: bool,
    /// The token key ring rotated.
    pub keys: bool,
    /// Token revocations were recorded.
    pub revocations: bool,
    /// Credentials created, revoked or marked (the bootstrap), by id.
    pub credentials: Vec<String>,
}

impl ChangeSet {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
