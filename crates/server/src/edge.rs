//! The edge service: what every request on every listener goes through before routing, and its
//! answer after. It catches a panic anywhere below it (answered `500 internal`, see
//! [`crate::panic`]), echoes the client's `X-Request-ID`, and turns axum's bare `405` into
//! problem+json.
//!
//! One hand-written service wrapped around the whole router, not three `Router::layer`s: a layer
//! applied through `Router::layer` wraps every route on its own and re-boxes it, and `from_fn`
//! boxes a `Next` and a future on top, so each costs every decision two allocations and a
//! dynamic call. Issue #12's A/B measured the three together at about 5 % of a decision's
//! instructions; here they cost three reference-counted clones and nothing boxed.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Context;
use std::task::Poll;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::response::Response;
use futures::future::CatchUnwind;
use futures::FutureExt;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use crate::error::ApiError;
use crate::panic::REQUEST_ID_HEADER;
use crate::state::Shared;

/// `inner` (a router) behind the edge: see the module documentation.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: Shared,
}

impl<S> Edge<S> {
    /// Wraps `inner`; `state` counts caught panics (`verdict_panics_total`).
    pub fn new(inner: S, state: Shared) -> Self {
        Self { inner, state }
    }
}

impl<S> std::fmt::Debug for Edge<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").finish_non_exhaustive()
    }
}

/// What the answer needs of a request that is gone once its handler ran (or unwound).
/// Reference-counted clones, no allocation.
struct Facts {
    method: Method,
    uri: Uri,
    client_id: Option<HeaderValue>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let req = req.map(axum::body::Body::new);
        let facts = Facts {
            method: req.method().clone(),
            uri: req.uri().clone(),
            client_id: req.headers().get(REQUEST_ID_HEADER).cloned(),
        };
        // Routing and a handler's synchronous part run here, not in the future: both are covered.
        let inner = &mut self.inner;
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::panic::in_request_sync(|| inner.call(req))
        }));
        match called {
            Ok(future) => EdgeFuture {
                inner: Some(AssertUnwindSafe(crate::panic::in_request(future)).catch_unwind()),
                ready: None,
                facts: Some(facts),
                state: self.state.clone(),
            },
            Err(payload) => EdgeFuture {
                inner: None,
                ready: Some(crate::panic::answer(&self.state, &facts.of(), &*payload)),
                facts: None,
                state: self.state.clone(),
            },
        }
    }
}

impl Facts {
    fn of(&self) -> crate::panic::PanickedRequest<'_> {
        crate::panic::PanickedRequest {
            method: &self.method,
            uri: &self.uri,
            client_id: self.client_id.as_ref(),
        }
    }
}

pin_project! {
    /// The future of [`Edge`]'s answer.
    pub struct EdgeFuture<F> {
        // The router answering; `None` when routing panicked before a future existed.
        #[pin]
        inner: Option<CatchUnwind<AssertUnwindSafe<TaskLocalFuture<(), F>>>>,
        // The `500` for a panic in routing, ready at once.
        ready: Option<Response>,
        facts: Option<Facts>,
        state: Shared,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (Some(inner), Some(facts)) = (this.inner.as_pin_mut(), this.facts.as_ref()) else {
            // Routing panicked (or, a caller bug, polled after completion): never panic here.
            let resp = this.ready.take();
            return Poll::Ready(Ok(
                resp.unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
            ));
        };
        let outcome = std::task::ready!(inner.poll(cx));
        let resp = match outcome {
            Ok(Ok(resp)) => finish(resp, facts.client_id.clone()),
            Ok(Err(never)) => match never {},
            Err(payload) => crate::panic::answer(this.state, &facts.of(), &*payload),
        };
        *this.facts = None;
        Poll::Ready(Ok(resp))
    }
}

/// A routed answer as the client sees it: axum's bare `405` as problem+json, the request id echoed.
fn finish(mut resp: Response, client_id: Option<HeaderValue>) -> Response {
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        // axum's own `405` carries an `Allow` header worth keeping.
        let allow = resp.headers().get(axum::http::header::ALLOW).cloned();
        resp = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see docs/api.md",
        )
        .into_response();
        if let Some(allow) = allow {
            resp.headers_mut().insert(axum::http::header::ALLOW, allow);
        }
    }
    if let Some(id) = client_id {
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    resp
}
