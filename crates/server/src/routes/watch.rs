//! `GET /v1/watch?from=N`: server-sent events, one per applied version after `N`, naming what
//! changed, so policy enforcement points can drop cached decisions at once instead of after a TTL.
//!
//! Each event has `id:` = its version, so a client that reconnects with `Last-Event-ID` resumes
//! where it stopped. A version older than this node's window (it restarted from a snapshot, or the
//! client was away too long) gets one `resync` event: reload what you cache, at or after the
//! version it names; the stream then continues from there.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::sse::KeepAlive;
use axum::response::sse::Sse;
use axum::response::IntoResponse;
use axum::response::Response;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::sync::OwnedSemaphorePermit;
use verdict_cluster::ChangeEvent;
use verdict_cluster::Published;
use verdict_cluster::Since;

use crate::error::ApiError;
use crate::state::Shared;

/// Events read from the window per step.
const BATCH: usize = 256;

/// Query of `GET /v1/watch`.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    /// Send the versions after this one (default: the current version, i.e. only what comes next).
    pub from: Option<u64>,
}

/// `GET /v1/watch`.
pub async fn watch(
    State(state): State<Shared>,
    Query(q): Query<WatchQuery>,
    headers: HeaderMap,
) -> Response {
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        None => None,
        Some(Ok(s)) => match s.trim().parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => return ApiError::bad_request(
                "invalid_header",
                "`Last-Event-ID` must be a version number (the `id` of the last event received)",
            )
            .into_response(),
        },
        Some(Err(_)) => {
            return ApiError::bad_request("invalid_header", "`Last-Event-ID` is not ASCII")
                .into_response()
        }
    };
    let Ok(permit) = state.watchers.clone().try_acquire_owned() else {
        return ApiError::unavailable(
            "overloaded",
            format!(
                "this node already serves its maximum of {} watch streams (`max_watchers`); retry later or watch another node",
                state.config.max_watchers
            ),
        )
        .into_response();
    };
    let published = state.node.published().clone();
    let from = last_event_id
        .or(q.from)
        .unwrap_or_else(|| published.load().version());
    let stream = events(
        published.clone(),
        from,
        published.subscribe(),
        state.stop.subscribe(),
        permit,
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

struct Cursor {
    published: Arc<Published>,
    after: u64,
    versions: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    pending: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
}

fn change(e: &ChangeEvent) -> Event {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".to_string());
    Event::default()
        .id(e.version.to_string())
        .event("change")
        .data(data)
}

fn events(
    published: Arc<Published>,
    after: u64,
    versions: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let cursor = Cursor {
        published,
        after,
        versions,
        stopping,
        pending: VecDeque::new(),
        _permit: permit,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.pending.pop_front() {
                return Some((Ok(e), c));
            }
            if *c.stopping.borrow() {
                return None;
            }
            match c.published.changes_since(c.after, BATCH) {
                Since::Events(list) if !list.is_empty() => {
                    if let Some(last) = list.last() {
                        c.after = last.version;
                    }
                    c.pending.extend(list.iter().map(|e| change(e)));
                }
                Since::Events(_) => {
                    // Nothing new: wait for the next version or shutdown.
                    tokio::select! {
                        changed = c.versions.changed() => if changed.is_err() { return None },
                        _ = c.stopping.changed() => return None,
                    }
                }
                Since::Gap { oldest } => {
                    let version = c.published.load().version();
                    let data = json!({
                        "reason": format!(
                            "versions after {} are no longer listed on this node (oldest listed: {}); reload what you cache at version {version} or later",
                            c.after,
                            oldest.map(|o| o.to_string()).unwrap_or_else(|| "none".into())
                        ),
                        "version": version,
                        "oldest_listed": oldest,
                    });
                    c.after = version;
                    c.pending.push_back(
                        Event::default()
                            .id(version.to_string())
                            .event("resync")
                            .data(data.to_string()),
                    );
                }
            }
        }
    })
}
