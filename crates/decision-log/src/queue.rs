//! The on-disk queue: append-only segment files in `DIR/queue/`, named by the sequence of their
//! first record (`00000000000000000001.seg`, zero-padded so names sort), holding frames (see
//! [`crate::frame`]).
//!
//! Segments are contiguous: a segment holds the sequences from its base up to the next segment's
//! base, so only the last one needs reading at start-up (to find a torn tail and the next
//! sequence). The last segment is the writer's; all others are sealed and only ever deleted, whole:
//! when every sink's persisted cursor is past them, or by `when_full = "drop_oldest"`.

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;

use tokio::sync::watch;

use crate::frame;
use crate::metrics::DropReason;
use crate::metrics::Metrics;

/// The segment list, shared by the writer (adds), the sinks (read, release) and eviction.
#[derive(Debug)]
pub(crate) struct Queue {
    dir: PathBuf,
    /// base → bytes. The last entry is the active segment.
    segments: Mutex<BTreeMap<u64, u64>>,
    metrics: Arc<Metrics>,
    /// Bumped whenever a segment is deleted, i.e. whenever space is freed.
    pub(crate) space: watch::Sender<u64>,
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) base: u64,
    pub(crate) file: File,
    pub(crate) len: u64,
}

/// What [`Queue::open`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) queue: Queue,
    pub(crate) active: Active,
    /// Highest sequence stored (base − 1 of the active segment when it is new).
    pub(crate) last_seq: u64,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, cutting a torn tail off the last segment. The next
    /// sequence is at least `min_next`, so that sequences keep increasing even if the queue was
    /// emptied while the cursors remember later ones.
    pub(crate) fn open(dir: &Path, min_next: u64, metrics: Arc<Metrics>) -> io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(base) = parse_name(&entry.file_name().to_string_lossy()) {
                segments.insert(base, entry.metadata()?.len());
            }
        }
        let mut next = min_next.max(1);
        let mut reuse = None;
        if let Some((&base, &len)) = segments.iter().next_back() {
            let path = segment_path(dir, base);
            let bytes = std::fs::read(&path)?;
            let scan = frame::scan(&bytes);
            if scan.valid_len < len {
                // A crash mid-write leaves a prefix of a frame; nothing after the first bad frame
                // was ever reported durable, so cutting there keeps every durable record.
                tracing::warn!(
                    segment = %path.display(),
                    cut_bytes = len - scan.valid_len,
                    kept_records = scan.records,
                    "decision log: cut a torn tail off the last segment"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_len)?;
                f.sync_all()?;
                metrics
                    .truncated_at_open
                    .store(len - scan.valid_len, Relaxed);
                segments.insert(base, scan.valid_len);
            }
            match scan.last_seq {
                Some(last) => next = next.max(last + 1),
                None if base >= next => {
                    next = base;
                    reuse = Some(base);
                }
                None => {
                    // Empty and behind the cursors: start a fresh segment at `next` instead.
                    std::fs::remove_file(&path)?;
                    segments.remove(&base);
                }
            }
        }
        let queue = Queue {
            dir: dir.to_path_buf(),
            segments: Mutex::new(segments),
            metrics,
            space: watch::Sender::new(0),
        };
        let active = match reuse {
            Some(base) => Active {
                base,
                file: OpenOptions::new()
                    .append(true)
                    .open(segment_path(dir, base))?,
                len: 0,
            },
            None => Active {
                base: next,
                file: queue.create_segment(next)?,
                len: 0,
            },
        };
        let (bytes, count, oldest) = {
            let segs = queue.lock();
            let oldest = segs.keys().next().copied().unwrap_or(next);
            (segs.values().sum::<u64>(), segs.len() as u64, oldest)
        };
        queue.metrics.queue_bytes.store(bytes, Relaxed);
        queue.metrics.segments.store(count, Relaxed);
        queue.metrics.oldest_seq.store(oldest, Relaxed);
        Ok(Opened {
            queue,
            active,
            last_seq: next - 1,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, u64>> {
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file of the segment starting at `base`.
    pub(crate) fn path(&self, base: u64) -> PathBuf {
        segment_path(&self.dir, base)
    }

    /// Creates an empty segment starting at `base` and makes its name durable.
    pub(crate) fn create_segment(&self, base: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(base))?;
        File::open(&self.dir)?.sync_all()?;
        let mut segs = self.lock();
        if segs.insert(base, 0).is_none() {
            self.metrics.segments.fetch_add(1, Relaxed);
        }
        Ok(file)
    }

    /// Records that the segment at `base` now holds `len` bytes.
    pub(crate) fn set_len(&self, base: u64, len: u64) {
        if let Some(l) = self.lock().get_mut(&base) {
            *l = len;
        }
    }

    /// The segment that holds `seq`, or the oldest one if `seq` was deleted already.
    pub(crate) fn locate(&self, seq: u64) -> Option<u64> {
        let segs = self.lock();
        segs.range(..=seq)
            .next_back()
            .or_else(|| segs.iter().next())
            .map(|(&b, _)| b)
    }

    /// The base of the segment after the one at `base`.
    pub(crate) fn next_base(&self, base: u64) -> Option<u64> {
        self.lock().range(base + 1..).next().map(|(&b, _)| b)
    }

    /// Deletes every sealed segment whose records all have sequences ≤ `acked` (the minimum over
    /// the sinks' persisted cursors).
    pub(crate) fn release(&self, acked: u64) -> io::Result<()> {
        let mut segs = self.lock();
        loop {
            let mut it = segs.iter();
            let (Some((&base, &bytes)), Some((&next, _))) = (it.next(), it.next()) else {
                return Ok(()); // only the active segment is left
            };
            if next - 1 > acked {
                return Ok(());
            }
            self.delete(&mut segs, base, bytes)?;
        }
    }

    /// `when_full = "drop_oldest"`: deletes the oldest sealed segments, acknowledged or not, until
    /// the queue fits in `max_bytes` or only the active segment is left.
    pub(crate) fn evict(&self, max_bytes: u64) -> io::Result<()> {
        let mut segs = self.lock();
        while self.metrics.queue_bytes.load(Relaxed) > max_bytes {
            let mut it = segs.iter();
            let (Some((&base, &bytes)), Some((&next, _))) = (it.next(), it.next()) else {
                return Ok(());
            };
            tracing::warn!(
                first_seq = base,
                records = next - base,
                "decision log full: evicting the oldest segment"
            );
            self.metrics.drops.add(DropReason::Evicted, next - base);
            self.delete(&mut segs, base, bytes)?;
        }
        Ok(())
    }

    fn delete(&self, segs: &mut BTreeMap<u64, u64>, base: u64, bytes: u64) -> io::Result<()> {
        match std::fs::remove_file(self.path(base)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        segs.remove(&base);
        let _ = self
            .metrics
            .queue_bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(bytes)));
        self.metrics.segments.fetch_sub(1, Relaxed);
        if let Some(&oldest) = segs.keys().next() {
            self.metrics.oldest_seq.store(oldest, Relaxed);
        }
        self.space.send_modify(|n| *n += 1);
        Ok(())
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_frames(active: &mut Active, seqs: std::ops::RangeInclusive<u64>) {
        let mut buf = Vec::new();
        for seq in seqs {
            frame::encode(&mut buf, seq, 1, b"{\"x\":1}");
        }
        active.file.write_all(&buf).unwrap();
        active.file.sync_all().unwrap();
        active.len += buf.len() as u64;
    }

    #[test]
    fn reopen_continues_after_the_last_record_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let mut o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        assert_eq!((o.active.base, o.last_seq), (1, 0));
        write_frames(&mut o.active, 1..=5);
        drop(o);
        let o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        assert_eq!((o.active.base, o.last_seq), (6, 5));
        assert_eq!(o.queue.locate(3), Some(1));
        assert_eq!(o.queue.locate(6), Some(6));
        assert_eq!(o.queue.next_base(1), Some(6));
        drop(o);
        // Nothing written to segment 6: it is reused, not multiplied.
        let o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        assert_eq!((o.active.base, o.last_seq), (6, 5));
        assert_eq!(m.segments.load(Relaxed), 2);
        // A cursor further ahead than the queue moves the next sequence on.
        drop(o);
        let o = Queue::open(dir.path(), 40, m.clone()).unwrap();
        assert_eq!((o.active.base, o.last_seq), (40, 39));
    }

    #[test]
    fn a_torn_tail_is_cut_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let mut o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        write_frames(&mut o.active, 1..=3);
        let good = o.active.len;
        // Half a frame, as a crash in the middle of a write leaves it.
        let mut partial = Vec::new();
        frame::encode(&mut partial, 4, 1, b"{\"x\":1}");
        o.active.file.write_all(&partial[..10]).unwrap();
        drop(o);
        let o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        assert_eq!(o.last_seq, 3);
        assert_eq!(m.truncated_at_open.load(Relaxed), 10);
        assert_eq!(std::fs::metadata(o.queue.path(1)).unwrap().len(), good);
    }

    #[test]
    fn release_deletes_only_sealed_segments_that_every_sink_passed() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let mut o = Queue::open(dir.path(), 0, m.clone()).unwrap();
        write_frames(&mut o.active, 1..=3);
        o.queue.set_len(1, o.active.len);
        o.queue.create_segment(4).unwrap();
        o.queue.create_segment(8).unwrap();
        o.queue.release(2).unwrap();
        assert!(o.queue.path(1).exists(), "3 not acknowledged yet");
        o.queue.release(3).unwrap();
        assert!(!o.queue.path(1).exists());
        assert_eq!(m.oldest_seq.load(Relaxed), 4);
        o.queue.release(1000).unwrap();
        assert!(!o.queue.path(4).exists());
        assert!(
            o.queue.path(8).exists(),
            "the active segment is never released"
        );
        assert_eq!(m.segments.load(Relaxed), 1);
    }
}
