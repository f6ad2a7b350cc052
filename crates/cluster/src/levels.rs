//! This member's view of the cluster's format levels: the active level (a copy of the one in the
//! published state, for the writers that do not hold a snapshot: the log store, the peer
//! transport), this release's identity, and the header by which members tell each other which peer
//! message formats they read.

use std::sync::atomic::AtomicU8;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::codec::NEWEST_READ;
use crate::codec::TOP_LEVEL;

/// Request header naming the newest peer message format the sender reads; the answer comes in the
/// newest format both read. A member of the release before levels sends none: format 1.
pub const PEER_READS_HEADER: &str = "verdict-peer-reads";

/// This release: the crate version and the git commit it was built from (`build.rs`).
pub fn release() -> String {
    format!(
        "{}+{}",
        env!("CARGO_PKG_VERSION"),
        env!("VERDICT_GIT_COMMIT")
    )
}

/// The highest format level this release supports.
pub fn supported_level() -> u8 {
    TOP_LEVEL
}

/// The peer message format to answer in, given the request's [`PEER_READS_HEADER`] (`None`:
/// absent or unreadable, a member of the release before levels).
pub fn answer_format(peer_reads: Option<u8>) -> u8 {
    peer_reads.unwrap_or(1).clamp(1, NEWEST_READ.peer_message)
}

/// The cluster's active format level as this member last applied it. Only goes up.
#[derive(Debug, Clone, Default)]
pub struct ActiveLevel(Arc<AtomicU8>);

impl ActiveLevel {
    /// The level (1 before anything was applied).
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire).max(1)
    }

    /// Records that the applied state is at `level`; never lowers it.
    pub fn observe(&self, level: u8) {
        self.0.fetch_max(level, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_the_newest_format_both_read() {
        assert_eq!(answer_format(None), 1);
        assert_eq!(answer_format(Some(0)), 1);
        assert_eq!(answer_format(Some(2)), 2.min(NEWEST_READ.peer_message));
        assert_eq!(answer_format(Some(200)), NEWEST_READ.peer_message);
        let level = ActiveLevel::default();
        assert_eq!(level.get(), 1);
        level.observe(2);
        level.observe(1);
        assert_eq!(level.get(), 2);
    }
}
