//! The client's error type: what the server rejected, what could not be sent, what could not be read.

use serde::Deserialize;
use serde::Serialize;

/// Where in a Cedar policy or schema text the server found a syntax error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// 0-based byte offset, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an `application/problem+json` error (see `docs/api.md` for the codes).
    #[error("{code}: {detail}")]
    Problem {
        /// HTTP status of the answer.
        status: u16,
        /// Stable, machine-readable code such as `cedar_syntax` or `precondition_failed`.
        code: String,
        /// What was wrong and how to fix it.
        detail: String,
        /// Source location, for Cedar policy and schema syntax errors.
        location: Option<Location>,
    },
    /// The server answered an error status without a problem body (e.g. a proxy in between).
    #[error("unexpected HTTP status {status}: {body}")]
    Status {
        /// HTTP status of the answer.
        status: u16,
        /// The start of the body, for the human reading the error.
        body: String,
    },
    /// The request could not be sent or the answer not received (refused, timed out, reset).
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered success, but the body is not the shape this client expects.
    #[error("cannot decode the answer (HTTP {status}): {message}")]
    Decode {
        /// HTTP status of the answer.
        status: u16,
        /// Why decoding failed.
        message: String,
    },
    /// The CA certificates given to [`crate::Client::with_ca_pem`] are not usable.
    #[error("invalid CA certificate file: {message}")]
    InvalidCa {
        /// Why they cannot be used.
        message: String,
    },
    /// The base URL given to [`crate::Client::new`] is not usable.
    #[error("invalid base URL `{url}`: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        message: String,
    },
}

/// The fields of a problem body this client reads; the rest (`type`, `title`, …) is ignored.
#[derive(Deserialize)]
struct ProblemBody {
    code: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    location: Option<Location>,
}

/// How much of a non-problem error body is kept in [`Error::Status`].
const MAX_BODY_IN_ERROR: usize = 512;

impl Error {
    /// Builds the error for a non-success answer from its status and body.
    ///
    /// Any body that parses as a problem with a `code` becomes [`Error::Problem`], whatever its
    /// `Content-Type`; anything else becomes [`Error::Status`].
    pub fn from_error_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<ProblemBody>(body) {
            Ok(p) => Error::Problem {
                status,
                code: p.code,
                detail: if p.detail.is_empty() {
                    p.title.unwrap_or_default()
                } else {
                    p.detail
                },
                location: p.location,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut body: String = text.chars().take(MAX_BODY_IN_ERROR).collect();
                if body.len() < text.len() {
                    body.push('…');
                }
                Error::Status { status, body }
            }
        }
    }

    /// The problem `code` when the server rejected the request with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Problem { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status when the server answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Problem { status, .. }
            | Error::Status { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
            Error::InvalidUrl { .. } | Error::InvalidCa { .. } => None,
        }
    }

    /// True when no answer came back: connection refused, DNS failure, timeout, reset.
    ///
    /// This is the "is the server running?" case, as opposed to the server saying no.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Transport(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_problem_with_a_location() {
        let body =
            br#"{"type":"https://verdict.dev/problems/cedar_syntax","title":"Cedar syntax error",
            "status":400,"code":"cedar_syntax","detail":"unexpected token `permitt`",
            "location":{"line":2,"column":5,"offset":17}}"#;
        match Error::from_error_response(400, body) {
            Error::Problem {
                status,
                code,
                detail,
                location,
            } => {
                assert_eq!(status, 400);
                assert_eq!(code, "cedar_syntax");
                assert_eq!(detail, "unexpected token `permitt`");
                assert_eq!(
                    location,
                    Some(Location {
                        line: 2,
                        column: 5,
                        offset: Some(17)
                    })
                );
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn a_problem_without_detail_falls_back_to_its_title() {
        let body = br#"{"title":"Not found","status":404,"code":"not_found"}"#;
        let e = Error::from_error_response(404, body);
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.to_string(), "not_found: Not found");
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_unreachable());
    }

    #[test]
    fn a_body_without_a_code_is_an_unexpected_status() {
        let e = Error::from_error_response(502, b"<html>bad gateway</html>");
        match e {
            Error::Status { status, body } => {
                assert_eq!(status, 502);
                assert_eq!(body, "<html>bad gateway</html>");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
    }

    #[test]
    fn long_non_problem_bodies_are_truncated() {
        let long = "x".repeat(10_000);
        match Error::from_error_response(500, long.as_bytes()) {
            Error::Status { body, .. } => assert!(body.chars().count() <= MAX_BODY_IN_ERROR + 1),
            other => panic!("expected a status error, got {other:?}"),
        }
    }
}
