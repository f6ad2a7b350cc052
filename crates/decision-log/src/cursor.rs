//! A sink's persisted acknowledgement cursor: `DIR/cursors/<name>.cursor`, a small JSON document
//! replaced atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash leaves either the old cursor or the new one.

use std::fs::File;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// The format version written in every cursor file.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// The sink's full name, for people reading the directory.
    sink: String,
    /// Highest sequence the sink acknowledged.
    acked: u64,
}

/// One sink's cursor file.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    dir: PathBuf,
    path: PathBuf,
    name: String,
}

impl Cursor {
    /// The cursor of the sink called `name` in `dir`. File names keep a readable, sanitised prefix
    /// of the name and add its CRC so that distinct names never share a file.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let readable: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let file = format!("{readable}-{:08x}.cursor", crc32fast::hash(name.as_bytes()));
        Self {
            dir: dir.to_path_buf(),
            path: dir.join(file),
            name: name.to_string(),
        }
    }

    /// The persisted acknowledgement; `None` for a new sink. An unreadable cursor is reported and
    /// treated as new: the sink then starts from the oldest record, which may duplicate but never
    /// loses.
    pub(crate) fn load(&self) -> io::Result<Option<u64>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(s) if s.version == VERSION => Ok(Some(s.acked)),
            Ok(s) => {
                tracing::warn!(sink = %self.name, version = s.version, "decision log: unknown cursor version, starting from the oldest record");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(sink = %self.name, error = %e, "decision log: unreadable cursor, starting from the oldest record");
                Ok(None)
            }
        }
    }

    /// Persists `acked`; returns once it is durable.
    pub(crate) fn store(&self, acked: u64) -> io::Result<()> {
        let body = serde_json::to_vec(&Stored {
            version: VERSION,
            sink: self.name.clone(),
            acked,
        })
        .map_err(io::Error::other)?;
        let tmp = self.path.with_extension("cursor.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_and_distinct_names_get_distinct_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = Cursor::new(dir.path(), "file:/var/log/a b");
        let b = Cursor::new(dir.path(), "file:/var/log/a_b");
        assert_ne!(a.path, b.path);
        assert_eq!(a.load().unwrap(), None);
        a.store(41).unwrap();
        a.store(42).unwrap();
        assert_eq!(a.load().unwrap(), Some(42));
        assert_eq!(b.load().unwrap(), None);
        std::fs::write(&b.path, b"garbage").unwrap();
        assert_eq!(b.load().unwrap(), None);
    }
}
