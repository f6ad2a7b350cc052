//! One load-generating task: its own keep-alive HTTP/1.1 connection, one request in flight.
//!
//! Each worker owns a hyper connection instead of sharing a pooled reqwest client: no pool lock, no
//! URL parsing per request, so the generator leaves the CPU to the node under test (which on a
//! small machine shares the cores). Measured against a trivial axum server on 2 cores: ~45–59k
//! req/s this way versus ~36k req/s with a pooled reqwest client, at less CPU per request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::header::CONTENT_TYPE;
use hyper::header::HOST;
use hyper::Method;
use hyper::Request;
use hyper::StatusCode;
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pause after a failed connect, so a down server is not hammered in a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// How much of the first non-200 body is kept for the report.
const SAMPLE_CHARS: usize = 300;

/// Where to send, and when to count.
#[derive(Debug)]
pub struct Plan {
    /// Resolved address of the node.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: HeaderValue,
    /// `Authorization: Bearer <credential>` for every request, when a credential was given.
    pub authorization: Option<HeaderValue>,
    /// What is sent: decisions (POST JSON to one path) or writes (PUT Cedar text, a path each).
    pub kind: Kind,
    /// `(request target, body)` in send order.
    pub schedule: Vec<(Uri, Bytes)>,
    /// Writes get a unique first line (`// write N`) from this counter, so no two writes carry
    /// the same text (a node could otherwise reuse work done for an identical earlier write).
    pub write_seq: AtomicU64,
    /// With `--rate`: each worker sends one request per this interval, and latency counts from
    /// the scheduled send time (so a slow answer also delays, and is charged to, the ones behind).
    pub interval: Option<Duration>,
    /// Requests completed before this instant are warmup and not counted.
    pub record_from: Instant,
    /// Stop at this instant (duration mode).
    pub end: Option<Instant>,
    /// Stop after this many measured requests (request-count mode), shared by all workers.
    pub budget: Option<(AtomicU64, u64)>,
}

/// The kind of request a plan sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /access/v1/evaluation` with a JSON body.
    Decision,
    /// `PUT /v1/policies/{id}` with a Cedar text body.
    WritePolicy,
    /// `POST /v1/entities` with one entity.
    WriteEntity,
}

/// What one worker saw; merged across workers for the report.
#[derive(Debug)]
pub struct Tally {
    /// Latency of every measured answer (any status), in microseconds.
    pub latency: Histogram<u64>,
    /// Answers with status 200.
    pub ok: u64,
    /// 200 answers whose decision was true / false.
    pub allow: u64,
    /// See `allow`.
    pub deny: u64,
    /// Answers by non-200 status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer (connect failure, reset, malformed response).
    pub errors: u64,
    /// When this worker's last measured request completed.
    pub last_done: Option<Instant>,
    /// The first transport error, for the report.
    pub first_error: Option<String>,
    /// The first non-200 answer (status and start of the body), for the report.
    pub first_non_200: Option<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // 1 µs to 1 h at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
            ok: 0,
            allow: 0,
            deny: 0,
            statuses: BTreeMap::new(),
            errors: 0,
            last_done: None,
            first_error: None,
            first_non_200: None,
        })
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.ok += other.ok;
        self.allow += other.allow;
        self.deny += other.deny;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        self.last_done = self.last_done.max(other.last_done);
        self.first_error = self.first_error.take().or(other.first_error);
        self.first_non_200 = self.first_non_200.take().or(other.first_non_200);
        Ok(())
    }

    fn error(&mut self, e: &BoxError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // Driving the connection inside the worker (select! beside each request) saves the cross-task
    // wake-ups but measured no difference in CPU per request, so it runs as its own task. It ends
    // when the worker drops `sender` or the peer closes; the worker sees either as an error.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), BoxError> {
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Sends requests until the plan says stop; `offset` staggers workers through the schedule and,
/// when paced, `first_due` through time.
pub async fn run(plan: Arc<Plan>, offset: usize, first_due: Instant, mut tally: Tally) -> Tally {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut next = offset;
    let mut due = first_due;
    loop {
        if plan.end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if plan.interval.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match connect(plan.addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    if Instant::now() >= plan.record_from {
                        tally.error(&e);
                    }
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        // The server may have closed an idle keep-alive connection: reconnect, count nothing.
        if sender.ready().await.is_err() {
            conn = None;
            continue;
        }
        let measured = Instant::now() >= plan.record_from;
        if let (true, Some((claimed, limit))) = (measured, &plan.budget) {
            if claimed.fetch_add(1, Ordering::Relaxed) >= *limit {
                break;
            }
        }
        let (path, mut body) = plan.schedule[next % plan.schedule.len()].clone();
        match plan.kind {
            Kind::Decision => {}
            Kind::WritePolicy => {
                let n = plan.write_seq.fetch_add(1, Ordering::Relaxed);
                let mut unique = format!("// write {n}\n").into_bytes();
                unique.extend_from_slice(&body);
                body = Bytes::from(unique);
            }
            Kind::WriteEntity => {
                let n = plan.write_seq.fetch_add(1, Ordering::Relaxed);
                let id = n % plan.schedule.len() as u64;
                body = Bytes::from(format!(
                    r#"[{{"uid":{{"type":"User","id":"bench-{id}"}},"attrs":{{"seq":{n}}},"parents":[]}}]"#
                ));
            }
        }
        next = next.wrapping_add(1);
        // Paced: latency counts from when the request was due, not from when it could be sent.
        let started = match plan.interval {
            Some(interval) => {
                let at = due;
                due += interval;
                at.min(Instant::now())
            }
            None => Instant::now(),
        };
        let answer = exchange(sender, request(&plan, path, body)).await;
        let done = Instant::now();
        let counted = measured && plan.end.is_none_or(|end| done <= end);
        match answer {
            Ok((status, body)) if counted => {
                let micros =
                    u64::try_from(done.duration_since(started).as_micros()).unwrap_or(u64::MAX);
                tally.latency.saturating_record(micros.max(1));
                tally.last_done = Some(done);
                if status == StatusCode::OK {
                    tally.ok += 1;
                    match decision(&body) {
                        Some(true) => tally.allow += 1,
                        Some(false) => tally.deny += 1,
                        None => {}
                    }
                } else {
                    *tally.statuses.entry(status.as_u16()).or_default() += 1;
                    if tally.first_non_200.is_none() {
                        let text = String::from_utf8_lossy(&body);
                        let sample: String = text.chars().take(SAMPLE_CHARS).collect();
                        tally.first_non_200 = Some(format!("{} {sample}", status.as_u16()));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                conn = None;
                if counted {
                    tally.last_done = Some(done);
                    tally.error(&e);
                }
            }
        }
    }
    tally
}

fn request(plan: &Plan, path: Uri, body: Bytes) -> Request<Full<Bytes>> {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
    let mut req = Request::new(Full::new(body));
    let (method, content_type) = match plan.kind {
        Kind::Decision => (Method::POST, JSON),
        Kind::WritePolicy => (Method::PUT, TEXT),
        Kind::WriteEntity => (Method::POST, JSON),
    };
    *req.method_mut() = method;
    *req.uri_mut() = path;
    let headers = req.headers_mut();
    headers.insert(HOST, plan.host.clone());
    headers.insert(CONTENT_TYPE, content_type);
    if let Some(a) = &plan.authorization {
        headers.insert(hyper::header::AUTHORIZATION, a.clone());
    }
    req
}

/// The `decision` of an AuthZEN answer, found by scanning rather than parsing the JSON: the
/// generator only needs the allow/deny split, not the body.
fn decision(body: &[u8]) -> Option<bool> {
    const KEY: &[u8] = b"\"decision\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = &body[at + KEY.len()..];
    let rest = rest
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    if rest.starts_with(b"true") {
        Some(true)
    } else if rest.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_found_without_parsing() {
        assert_eq!(decision(br#"{"decision":true,"context":{}}"#), Some(true));
        assert_eq!(
            decision(br#"{"context":{"version":3}, "decision" : false}"#),
            Some(false)
        );
        assert_eq!(decision(br#"{"type":"x"}"#), None);
    }
}
