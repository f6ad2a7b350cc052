//! A panic while answering a request is a bug, but it must cost the client one `500`, not a
//! dropped connection, and cost the log one line, not a backtrace per request (a client that can
//! trigger it could otherwise flood the log).
//!
//! Two parts: [`catch_panics`], the outermost middleware of every listener's router, catches the
//! unwinding handler and answers `500 internal` (problem+json, with a request id) and counts it in
//! `verdict_panics_total`; [`install_hook`] replaces the process's panic hook so that a panic
//! inside such a request prints nothing itself and hands its message and location to the
//! middleware, which logs the one line. Panics anywhere else (start-up, background tasks) still go
//! to the previous hook, backtrace and all.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use futures::FutureExt;

use crate::error::ApiError;
use crate::state::Metrics;
use crate::state::Shared;

/// Header carrying a request's id: the client's, echoed, or one made up for a `500`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// Set while a request runs inside [`catch_panics`]: the hook's sign that the panic will be
    /// caught and logged there.
    static IN_REQUEST: ();
}

thread_local! {
    /// What the hook saw of the last caught panic on this thread: its message and location.
    // INVARIANT: the hook runs on the panicking thread, and `catch_unwind` in the middleware's
    // poll stops the unwinding on that same thread before anything else runs there, so the
    // middleware reads exactly the panic it caught.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the panic hook described in the module documentation; later calls do nothing.
pub fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_REQUEST.try_with(|_| ()).is_ok() {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let what = format!("{}{at}", message(info.payload()));
                CAUGHT.with(|c| *c.borrow_mut() = Some(what));
            } else {
                previous(info);
            }
        }));
    });
}

fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Middleware for every listener: runs the request, and if its handling panics answers
/// `500 internal` with a request id (the client's `X-Request-ID`, else a new UUIDv7), logs one
/// line and counts it.
pub async fn catch_panics(State(state): State<Shared>, req: Request, next: Next) -> Response {
    // Kept for the log line and the answer: the request itself is gone once the handler unwinds.
    // Reference-counted clones, no allocation: this runs before every decision.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let client_id = req.headers().get(REQUEST_ID_HEADER).cloned();
    let run = IN_REQUEST.scope((), next.run(req));
    let payload = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(resp) => return resp,
        Err(payload) => payload,
    };
    Metrics::inc(&state.metrics.panics);
    let what = CAUGHT
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| message(payload.as_ref()).to_owned());
    let id = client_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    tracing::error!(request_id = %id, %method, path = uri.path(), panic = %what, "a request panicked; answered 500");
    internal(&id)
}

/// The answer to a request whose handling panicked.
fn internal(id: &str) -> Response {
    let mut e = ApiError::internal(format!(
        "the node hit a bug while answering this request (request id `{id}`) and did not finish \
         it; a write it carried may or may not have been applied (read the resource to see). \
         Please report it with the request id; the node's log has the details"
    ));
    e.request_id = Some(id.to_owned());
    let mut resp = e.into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
