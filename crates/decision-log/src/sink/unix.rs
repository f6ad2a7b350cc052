//! The unix-socket sink: an ndjson stream to a sidecar, which acknowledges with
//! `{"ack": SEQUENCE}` lines (the protocol is in the crate docs). A batch is written, then the sink
//! waits for an acknowledgement covering its last record; a timeout, a closed connection or a
//! malformed line drops the connection, and the batch is sent again on a new one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::io::AsyncWriteExt;
use tokio::io::BufReader;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::time::timeout_at;
use tokio::time::Instant;

use crate::config::UnixSinkConfig;
use crate::reader::Batch;

#[derive(Debug)]
pub(crate) struct UnixSink {
    path: PathBuf,
    ack_timeout: Duration,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

/// One line from the sidecar.
#[derive(Debug, Deserialize)]
struct Ack {
    ack: u64,
}

impl UnixSink {
    pub(crate) fn new(config: &UnixSinkConfig) -> Self {
        Self {
            path: config.path.clone(),
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            conn: None,
        }
    }

    pub(crate) async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let r = self.try_deliver(batch).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn try_deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let deadline = Instant::now() + self.ack_timeout;
        let path = self.path.display().to_string();
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = timeout_at(deadline, UnixStream::connect(&self.path))
                    .await
                    .map_err(|_| format!("connecting to `{path}` timed out"))?
                    .map_err(|e| format!("cannot connect to `{path}`: {e}"))?;
                let (read, write) = stream.into_split();
                self.conn.insert(Conn {
                    read: BufReader::new(read),
                    write,
                })
            }
        };
        timeout_at(deadline, conn.write.write_all(&batch.lines))
            .await
            .map_err(|_| format!("the sidecar at `{path}` is not reading"))?
            .map_err(|e| format!("cannot write to `{path}`: {e}"))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = timeout_at(deadline, conn.read.read_line(&mut line))
                .await
                .map_err(|_| {
                    format!(
                        "the sidecar at `{path}` did not acknowledge sequence {} within {} ms",
                        batch.last_seq,
                        self.ack_timeout.as_millis()
                    )
                })?
                .map_err(|e| format!("cannot read from `{path}`: {e}"))?;
            if n == 0 {
                return Err(format!("the sidecar at `{path}` closed the connection"));
            }
            if line.trim().is_empty() {
                continue;
            }
            let ack: Ack = serde_json::from_str(&line).map_err(|_| {
                format!(
                    "the sidecar at `{path}` sent `{}`; expected `{{\"ack\": SEQUENCE}}`",
                    line.trim()
                )
            })?;
            if ack.ack >= batch.last_seq {
                return Ok(());
            }
        }
    }
}
