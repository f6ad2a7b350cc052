//! A panic while answering a request is a bug, but it must cost the client one `500`, not a
//! dropped connection, and cost the log one line, not a backtrace per request (a client that can
//! trigger it could otherwise flood the log).
//!
//! Two parts: [`crate::edge::Edge`], the service in front of every listener's router, catches the
//! unwinding handler and calls [`answer`]: `500 internal` (problem+json, with a request id),
//! counted in `verdict_panics_total`; [`install_hook`] replaces the process's panic hook so that a
//! panic inside such a request prints nothing itself and hands its message and location to
//! [`answer`], which logs the one line. Panics anywhere else (start-up, background tasks) still go
//! to the previous hook, backtrace and all.

use std::cell::RefCell;
use std::sync::Once;

use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::Metrics;
use crate::state::Shared;

/// Header carrying a request's id: the client's, echoed, or one made up for a `500`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    /// Set while a request runs inside [`crate::edge::Edge`]: the hook's sign that the panic will
    /// be caught and logged there.
    static IN_REQUEST: ();
}

thread_local! {
    /// What the hook saw of the last caught panic on this thread: its message and location.
    // INVARIANT: the hook runs on the panicking thread, and `catch_unwind` in the edge's call or
    // poll stops the unwinding on that same thread before anything else runs there, so the
    // edge reads exactly the panic it caught.
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

/// Runs `request` as a request whose panics [`crate::edge::Edge`] catches: the hook logs nothing
/// itself and leaves the message for [`answer`].
pub fn in_request<F: std::future::Future>(
    request: F,
) -> tokio::task::futures::TaskLocalFuture<(), F> {
    IN_REQUEST.scope((), request)
}

/// [`in_request`] for the synchronous part of a call (routing, a service's `call`).
pub fn in_request_sync<R>(f: impl FnOnce() -> R) -> R {
    IN_REQUEST.sync_scope((), f)
}

/// What the log line and the answer say of a request that panicked.
#[derive(Debug)]
pub struct PanickedRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its URI (only the path is logged).
    pub uri: &'a Uri,
    /// The client's `X-Request-ID`, if it sent one.
    pub client_id: Option<&'a HeaderValue>,
}

/// The answer to a request whose handling panicked with `payload`: counts it, logs one line with a
/// request id (the client's, else a new UUIDv7) and answers `500 internal` carrying that id.
pub fn answer(
    state: &Shared,
    request: &PanickedRequest<'_>,
    payload: &(dyn std::any::Any + Send),
) -> Response {
    Metrics::inc(&state.metrics.panics);
    let what = CAUGHT
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(|| message(payload).to_owned());
    let id = request
        .client_id
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = request.method;
    tracing::error!(request_id = %id, %method, path = request.uri.path(), panic = %what, "a request panicked; answered 500");
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
