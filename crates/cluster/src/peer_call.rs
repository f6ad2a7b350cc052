//! Member-to-member calls beside Raft's own RPCs that releases add over time (drain another
//! member, ask for its capacity figures): HTTP with JSON bodies on the peer listener, behind the
//! cluster secret, each on a path of its own.
//!
//! Why JSON and separate paths rather than new fields in the bincode peer messages: bincode is
//! positional, so a field appended to a message breaks every older reader, while a JSON reader
//! ignores fields it does not know. And a call an older member does not have answers `404`, which
//! the caller reports as "older release, not known" instead of failing. The answers are small, so
//! the cost of JSON does not matter here.

use std::io;
use std::time::Duration;

use reqwest::Method;

use crate::network::peer_http;
use crate::network::scheme;
use crate::network::PeerTls;
use crate::network::SECRET_HEADER;

/// Largest answer body read from a member; these calls answer a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a member answered to a [`PeerCaller::call`].
#[derive(Debug, Clone, PartialEq)]
pub enum PeerAnswer {
    /// The member answered: its HTTP status and its JSON body (`Null` when the body is not JSON).
    Answered {
        /// HTTP status of the answer.
        status: u16,
        /// The body as JSON.
        body: serde_json::Value,
    },
    /// The member does not serve this call (`404`): it runs an older release.
    NotServed,
    /// No answer: no connection, a timeout, or an answer over [`MAX_ANSWER_BYTES`].
    Unreachable(String),
}

impl PeerAnswer {
    /// Maps an HTTP answer: `404` is a call the member's release does not have.
    pub fn from_http(status: u16, body: &[u8]) -> Self {
        if status == 404 {
            return PeerAnswer::NotServed;
        }
        PeerAnswer::Answered {
            status,
            body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Makes the calls of this module, with its own connection pool (Raft's heartbeats never wait
/// behind them).
#[derive(Clone)]
pub struct PeerCaller {
    http: reqwest::Client,
    secret: String,
    scheme: &'static str,
}

impl PeerCaller {
    /// A caller presenting `secret`, over TLS when `tls` is set.
    pub fn new(secret: String, tls: &PeerTls) -> Result<Self, io::Error> {
        Ok(Self {
            http: peer_http("peer call", None, tls)?,
            secret,
            scheme: scheme(tls),
        })
    }

    /// Sends `method path` (no body) to the peer listener at `peer_addr` and waits at most
    /// `timeout` for the whole answer.
    pub async fn call(
        &self,
        peer_addr: &str,
        method: Method,
        path: &str,
        timeout: Duration,
    ) -> PeerAnswer {
        let url = format!("{}://{peer_addr}{path}", self.scheme);
        let answer = async {
            let mut resp = self
                .http
                .request(method, url)
                .header(SECRET_HEADER, &self.secret)
                .send()
                .await
                .map_err(|e| format!("{peer_addr} unreachable: {e}"))?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("{peer_addr} broke off its answer: {e}"))?
            {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "{peer_addr} answered more than {MAX_ANSWER_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(PeerAnswer::from_http(status, &body))
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => PeerAnswer::Unreachable(e),
            Err(_) => PeerAnswer::Unreachable(format!(
                "{peer_addr} did not answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_an_older_member_does_not_have_is_not_served() {
        assert_eq!(
            PeerAnswer::from_http(404, b"no peer RPC"),
            PeerAnswer::NotServed
        );
        assert_eq!(
            PeerAnswer::from_http(200, br#"{"a": 1}"#),
            PeerAnswer::Answered {
                status: 200,
                body: serde_json::json!({"a": 1})
            }
        );
        assert_eq!(
            PeerAnswer::from_http(409, b"not json"),
            PeerAnswer::Answered {
                status: 409,
                body: serde_json::Value::Null
            }
        );
    }
}
