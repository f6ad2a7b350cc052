//! Whether the request being served has proposed a write. The request timeout (`408`) is for
//! requests that are slow to arrive or to be checked; once a write is in the Raft log it may commit,
//! and answering `408` would tell the client it failed when it did not. So the timeout layer runs
//! each request inside a [`Proposal`] scope, [`crate::state::AppState::propose`] marks it just
//! before proposing, and a marked request is answered with its outcome (the proposal bounds its
//! own wait and ends in `503 outcome_unknown` or `no_leader`) instead of `408`.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

tokio::task_local! {
    static PROPOSED: Arc<AtomicBool>;
}

/// The mark of one request: set once it has proposed a write.
#[derive(Clone, Default)]
pub struct Proposal(Arc<AtomicBool>);

impl Proposal {
    /// Runs `request` with this mark in scope.
    pub fn scope<F: Future>(&self, request: F) -> impl Future<Output = F::Output> {
        PROPOSED.scope(self.0.clone(), request)
    }

    /// Whether the request proposed a write.
    pub fn was_proposed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Marks the current request (if it runs in a [`Proposal`] scope) as having proposed a write.
pub fn mark() {
    let _ = PROPOSED.try_with(|p| p.store(true, Ordering::Release));
}
