//! The file sink: ndjson appended to a local file, fsynced before each acknowledgement (and
//! before a rotation), rotated by size
//! (`path` → `path.1` → `path.2` … `path.KEEP`) for log shippers that follow the file.

use std::ffi::OsString;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;

use crate::config::FileSinkConfig;
use crate::reader::Batch;

/// Writes batches on a blocking thread; the writer moves there and back for each batch.
#[derive(Debug)]
pub(crate) struct FileSink {
    config: FileSinkConfig,
    writer: Option<FileWriter>,
}

impl FileSink {
    pub(crate) fn new(config: &FileSinkConfig) -> Self {
        Self {
            config: config.clone(),
            writer: None,
        }
    }

    pub(crate) async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        let mut writer = self.writer.take().unwrap_or_else(|| FileWriter {
            path: self.config.path.clone(),
            rotate_bytes: self.config.rotate_bytes,
            keep: self.config.keep,
            file: None,
            size: 0,
        });
        let lines = batch.lines.clone();
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let r = writer.write(&lines);
            (writer, r)
        })
        .await
        .map_err(|e| format!("file sink task failed: {e}"))?;
        self.writer = Some(writer);
        result.map_err(|e| format!("cannot write `{}`: {e}", self.config.path.display()))
    }

    /// Flushes what was written to disk: acknowledging moves the cursor past these records.
    pub(crate) async fn sync(&mut self) -> Result<(), String> {
        let Some(file) = self.writer.as_ref().and_then(|w| w.file.as_ref()) else {
            return Ok(());
        };
        let file = file
            .try_clone()
            .map_err(|e| format!("cannot sync `{}`: {e}", self.config.path.display()))?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| format!("file sink task failed: {e}"))?
            .map_err(|e| format!("cannot sync `{}`: {e}", self.config.path.display()))
    }
}

#[derive(Debug)]
struct FileWriter {
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
    file: Option<File>,
    /// Bytes in the current file, all of them whole lines.
    size: u64,
}

impl FileWriter {
    fn write(&mut self, lines: &[u8]) -> io::Result<()> {
        let r = self.try_write(lines);
        if r.is_err() {
            // Leave no half batch behind for the shipper to trip over; the retry writes it whole.
            // Earlier batches were written but not yet synced (the shipper syncs before it
            // acknowledges, through a file this drops): sync them now.
            if let Some(f) = self.file.take() {
                let _ = f.set_len(self.size);
                let _ = f.sync_data();
            }
        }
        r
    }

    fn try_write(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)?;
            self.size = cut_torn_line(&f, &self.path)?;
            self.file = Some(f);
        }
        if self.size > 0 && self.size + lines.len() as u64 > self.rotate_bytes {
            self.rotate()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        // Not synced here: the shipper syncs (FileSink::sync) before it acknowledges.
        f.write_all(lines)?;
        self.size += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        // Records written but not yet acknowledged must be on disk before the file is renamed
        // out of the way (after that, sync() only sees the new file).
        if let Some(f) = self.file.take() {
            f.sync_data()?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..self.keep).rev() {
                match std::fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.file = Some(f);
        Ok(())
    }
}

/// Cuts a partial last line off the file and returns its length, which then ends in `\n` (or is
/// 0). A process killed inside a large `write` can leave part of a batch behind (Linux stops a
/// regular-file write between pages once SIGKILL is pending); that batch was never acknowledged,
/// so it is sent again whole, and without the cut its first line would be glued to the torn one.
fn cut_torn_line(f: &File, path: &Path) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = buf
            .get_mut(..(end - start) as usize)
            .ok_or_else(|| io::Error::other("chunk out of range"))?;
        f.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(
            file = %path.display(),
            cut_bytes = len - end,
            "decision log: cut a partial last line off the file sink (a batch torn by a crash; it is sent again)"
        );
        f.set_len(end)?;
        f.sync_data()?;
    }
    Ok(end)
}

/// `path.N`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopened(content: &[u8]) -> (Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ndjson");
        std::fs::write(&path, content).unwrap();
        let f = OpenOptions::new()
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        let len = cut_torn_line(&f, &path).unwrap();
        (std::fs::read(&path).unwrap(), len)
    }

    #[test]
    fn a_torn_last_line_is_cut_and_whole_lines_kept() {
        assert_eq!(reopened(b""), (b"".to_vec(), 0));
        assert_eq!(reopened(b"{\"a\":1}\n"), (b"{\"a\":1}\n".to_vec(), 8));
        assert_eq!(
            reopened(b"{\"a\":1}\n{\"seq\":2,\"no"),
            (b"{\"a\":1}\n".to_vec(), 8)
        );
        assert_eq!(reopened(b"{\"seq\":1"), (b"".to_vec(), 0));
        // A torn tail longer than one read chunk.
        let mut long = b"x\n".to_vec();
        long.extend(std::iter::repeat_n(b'y', 200 * 1024));
        assert_eq!(reopened(&long), (b"x\n".to_vec(), 2));
    }
}
