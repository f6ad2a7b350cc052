//! The HTTP sink: one `POST` of ndjson per batch (`Content-Type: application/x-ndjson`, gzipped
//! unless configured otherwise); any 2xx answer acknowledges the whole batch, anything else (or
//! no answer within the timeout) is retried.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::HeaderMap;
use reqwest::header::HeaderName;
use reqwest::header::HeaderValue;
use reqwest::header::CONTENT_ENCODING;
use reqwest::header::CONTENT_TYPE;

use crate::config::HttpSinkConfig;
use crate::reader::Batch;

#[derive(Debug)]
pub(crate) struct HttpSink {
    client: reqwest::Client,
    url: String,
    gzip: bool,
    headers: HeaderMap,
    /// The body of the batch being retried, so a retry does not compress again.
    body: Option<(u64, Bytes)>,
}

impl HttpSink {
    pub(crate) fn new(config: &HttpSinkConfig) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a valid header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}` has an invalid value"))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: config.url.clone(),
            gzip: config.gzip,
            headers,
            body: None,
        })
    }

    pub(crate) async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let body = match &self.body {
            Some((first, body)) if *first == batch.first_seq => body.clone(),
            _ => {
                let body = if self.gzip {
                    let lines = batch.lines.clone();
                    tokio::task::spawn_blocking(move || gzip(&lines))
                        .await
                        .map_err(|e| format!("gzip task failed: {e}"))?
                        .map_err(|e| format!("cannot gzip a batch: {e}"))?
                } else {
                    batch.lines.clone()
                };
                let body = Bytes::from(body);
                self.body = Some((batch.first_seq, body.clone()));
                body
            }
        };
        let mut req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot POST to `{}`: {}", self.url, chain(&e)))?;
        if resp.status().is_success() {
            self.body = None;
            Ok(())
        } else {
            Err(format!("`{}` answered {}", self.url, resp.status()))
        }
    }
}

fn gzip(lines: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(lines.len() / 4), Compression::fast());
    enc.write_all(lines)?;
    enc.finish()
}

/// An error with its causes, which is where reqwest says what actually failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
