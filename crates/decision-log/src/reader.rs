//! A sink's view of the queue: reads durable frames in sequence order, across segments, and turns
//! them into ndjson lines.
//!
//! Reads are blocking file I/O (run them on a blocking thread). They never go past what the writer
//! has published as durable, so a reader never sees a frame being written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::frame::Header;
use crate::frame::HEADER_LEN;
use crate::metrics::DropReason;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::record::push_line;
use crate::writer::Durable;

/// Bytes read from a segment at a time.
const CHUNK: usize = 256 * 1024;

/// Records read for one delivery, as ndjson.
#[derive(Debug, Default, Clone)]
pub(crate) struct Batch {
    /// The lines, each `\n`-terminated.
    pub(crate) lines: Vec<u8>,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) count: usize,
    /// Timestamp of the first record, for the oldest-unacknowledged age.
    pub(crate) first_ts: u64,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Reads the queue from a sequence onwards.
#[derive(Debug)]
pub(crate) struct Reader {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    /// The next sequence to hand out.
    next: u64,
    seg: Option<SegmentReader>,
}

impl Reader {
    /// A reader whose first record is the first one after `acked`.
    pub(crate) fn new(queue: Arc<Queue>, metrics: Arc<Metrics>, acked: u64) -> Self {
        Self {
            queue,
            metrics,
            next: acked + 1,
            seg: None,
        }
    }

    /// The last sequence handed out (or skipped).
    pub(crate) fn position(&self) -> u64 {
        self.next - 1
    }

    /// Appends up to `max` more durable records to `batch`. Records deleted before this reader got
    /// to them (eviction) are skipped: the reader moves on to the oldest record still stored.
    pub(crate) fn read_into(
        &mut self,
        batch: &mut Batch,
        durable: Durable,
        max: usize,
    ) -> io::Result<()> {
        let mut reopen = 0;
        while batch.count < max && self.next <= durable.seq {
            let Some(seg) = self.seg.as_mut() else {
                let Some(base) = self.queue.locate(self.next) else {
                    return Ok(());
                };
                match SegmentReader::open(&self.queue, base) {
                    Ok(s) => self.seg = Some(s),
                    // Deleted between `locate` and `open` (eviction): look again.
                    Err(e) if e.kind() == io::ErrorKind::NotFound && reopen < 3 => reopen += 1,
                    Err(e) => return Err(e),
                }
                continue;
            };
            let sealed = seg.base != durable.segment;
            let limit = (!sealed).then_some(durable.len);
            match seg.next(limit)? {
                Next::Frame(h) => {
                    if h.seq > durable.seq {
                        return Ok(());
                    }
                    if h.seq >= self.next {
                        push_line(&mut batch.lines, h.seq, seg.payload(&h));
                        if batch.count == 0 {
                            batch.first_seq = h.seq;
                            batch.first_ts = h.timestamp_ms;
                        }
                        batch.last_seq = h.seq;
                        batch.count += 1;
                        self.next = h.seq + 1;
                    }
                    seg.advance(&h);
                }
                _ if !sealed => return Ok(()),
                end => {
                    let Some(next_base) = self.queue.next_base(seg.base) else {
                        return Ok(());
                    };
                    if end != Next::End && self.next < next_base {
                        tracing::error!(
                            segment = %self.queue.path(seg.base).display(),
                            from_seq = self.next,
                            records = next_base - self.next,
                            "decision log: corrupt frame in a sealed segment, skipping its rest"
                        );
                        self.metrics
                            .drops
                            .add(DropReason::Corrupt, next_base - self.next);
                    }
                    self.next = self.next.max(next_base);
                    self.seg = None;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Frame(Header),
    /// No bytes left (up to the limit) at a frame boundary.
    End,
    /// Some bytes left, but not a whole frame.
    Partial,
    /// A frame that fails its check.
    Corrupt,
}

#[derive(Debug)]
struct SegmentReader {
    base: u64,
    file: File,
    /// Bytes read ahead; `buf[pos..]` starts at the next frame, `buf[0]` is at file offset `offset`.
    buf: Vec<u8>,
    pos: usize,
    offset: u64,
}

impl SegmentReader {
    fn open(queue: &Queue, base: u64) -> io::Result<Self> {
        Ok(Self {
            base,
            file: File::open(queue.path(base))?,
            buf: Vec::new(),
            pos: 0,
            offset: 0,
        })
    }

    fn next(&mut self, limit: Option<u64>) -> io::Result<Next> {
        if !self.fill(HEADER_LEN, limit)? {
            return Ok(if self.buf.len() == self.pos {
                Next::End
            } else {
                Next::Partial
            });
        }
        let Some(head) = self
            .buf
            .get(self.pos..self.pos + HEADER_LEN)
            .and_then(|h| h.try_into().ok())
        else {
            return Ok(Next::Partial);
        };
        let Some(header) = Header::parse(head) else {
            return Ok(Next::Corrupt);
        };
        if !self.fill(HEADER_LEN + header.len, limit)? {
            return Ok(Next::Partial);
        }
        Ok(if header.check(self.payload(&header)) {
            Next::Frame(header)
        } else {
            Next::Corrupt
        })
    }

    fn payload(&self, h: &Header) -> &[u8] {
        let start = self.pos + HEADER_LEN;
        self.buf.get(start..start + h.len).unwrap_or_default()
    }

    fn advance(&mut self, h: &Header) {
        self.pos += HEADER_LEN + h.len;
    }

    /// Makes `n` bytes available at `pos` without reading past `limit`; false if there are not.
    fn fill(&mut self, n: usize, limit: Option<u64>) -> io::Result<bool> {
        if self.buf.len() - self.pos >= n {
            return Ok(true);
        }
        self.buf.drain(..self.pos);
        self.offset += self.pos as u64;
        self.pos = 0;
        let end = limit.unwrap_or(u64::MAX);
        while self.buf.len() < n {
            let at = self.offset + self.buf.len() as u64;
            if at >= end {
                return Ok(false);
            }
            let want = (n - self.buf.len()).max(CHUNK).min((end - at) as usize);
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let got = self.file.read_at(&mut self.buf[old..], at)?;
            self.buf.truncate(old + got);
            if got == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FsyncMode;
    use crate::config::WhenFull;
    use crate::writer::Push;
    use crate::writer::Writer;
    use crate::writer::WriterOptions;

    fn start(
        dir: &std::path::Path,
        segment_bytes: u64,
    ) -> (Arc<Writer>, Arc<Queue>, std::thread::JoinHandle<()>) {
        let metrics = Arc::new(Metrics::default());
        let o = Queue::open(dir, 0, metrics.clone()).unwrap();
        let queue = Arc::new(o.queue);
        let durable = Durable {
            seq: o.last_seq,
            segment: o.active.base,
            len: o.active.len,
        };
        let opts = WriterOptions {
            fsync: FsyncMode::Interval,
            interval: Duration::from_millis(1),
            max_bytes: u64::MAX,
            when_full: WhenFull::Block,
            segment_bytes,
            retry_base: Duration::from_millis(1),
            retry_max: Duration::from_millis(1),
        };
        let writer = Arc::new(Writer::new(queue.clone(), metrics, opts, durable));
        let w = writer.clone();
        let active = o.active;
        (writer, queue, std::thread::spawn(move || w.run(active)))
    }

    fn read_all(queue: &Arc<Queue>, durable: Durable, after: u64) -> Vec<u64> {
        let mut reader = Reader::new(queue.clone(), Arc::new(Metrics::default()), after);
        let mut seqs = Vec::new();
        loop {
            let mut batch = Batch::default();
            reader.read_into(&mut batch, durable, 7).unwrap();
            if batch.is_empty() {
                return seqs;
            }
            for line in batch.lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(v["n"], v["seq"], "payload belongs to its frame");
                seqs.push(v["seq"].as_u64().unwrap());
            }
        }
    }

    #[test]
    fn writer_to_reader_round_trip_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, queue, thread) = start(dir.path(), 200);
        // Segments roll between write batches, so write in several.
        for n in 1..=40u64 {
            let payload = format!("{{\"n\":{n}}}");
            assert_eq!(writer.push(payload.as_bytes(), 5), Push::Logged(n));
            if n % 5 == 0 {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while writer.durable.borrow().seq < n {
                    assert!(std::time::Instant::now() < deadline, "writer stuck");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        writer.close();
        thread.join().unwrap();
        let durable = *writer.durable.borrow();
        assert_eq!(durable.seq, 40);
        assert_eq!(read_all(&queue, durable, 0), (1..=40).collect::<Vec<_>>());
        assert_eq!(read_all(&queue, durable, 33), (34..=40).collect::<Vec<_>>());
        assert!(
            queue.next_base(1).is_some(),
            "small segments: several of them"
        );
        drop((writer, queue));

        let (writer, queue, thread) = start(dir.path(), 200);
        assert_eq!(writer.push(b"{\"n\":41}", 5), Push::Logged(41));
        writer.close();
        thread.join().unwrap();
        let durable = *writer.durable.borrow();
        assert_eq!(read_all(&queue, durable, 0), (1..=41).collect::<Vec<_>>());
    }

    #[test]
    fn a_reader_never_passes_the_durable_position() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, queue, thread) = start(dir.path(), 1 << 20);
        for n in 1..=5u64 {
            writer.push(format!("{{\"n\":{n}}}").as_bytes(), 5);
        }
        writer.close();
        thread.join().unwrap();
        let full = *writer.durable.borrow();
        // Pretend only three records were durable: the reader stops there.
        let mut partial = full;
        partial.seq = 3;
        partial.len = full.len / 5 * 3;
        assert_eq!(read_all(&queue, partial, 0), vec![1, 2, 3]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u64),
        Sync,
        Reopen,
        /// Garbage after the last frame, as a crash leaves behind a write that never completed.
        Garbage(Vec<u8>),
        /// The last frame cut short: it never became durable, so its sequence is reused.
        Tear(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1..12u64).prop_map(Op::Push),
            2 => Just(Op::Sync),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Op::Garbage),
            1 => (1..20u64).prop_map(Op::Tear),
        ]
    }

    fn wait_durable(writer: &Writer, seq: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.durable.borrow().seq < seq {
            assert!(std::time::Instant::now() < deadline, "writer stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
        let mut segs: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segs.sort();
        segs.pop().unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// The queue beside a model (a Vec of the sequences that must be readable), over random
        /// appends, restarts and crash debris; compared after every step.
        #[test]
        fn the_queue_matches_a_model(
            segment_bytes in 40..600u64,
            ops in proptest::collection::vec(op(), 1..30),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut writer, mut queue, mut thread) = start(dir.path(), segment_bytes);
            let mut model: Vec<u64> = Vec::new();
            for op in ops {
                let stop = |writer: &Writer, thread: std::thread::JoinHandle<()>| {
                    writer.close();
                    thread.join().unwrap();
                };
                match op {
                    Op::Push(k) => {
                        for _ in 0..k {
                            let seq = model.last().copied().unwrap_or(0) + 1;
                            let payload = format!("{{\"n\":{seq}}}");
                            proptest::prop_assert_eq!(writer.push(payload.as_bytes(), 5), Push::Logged(seq));
                            model.push(seq);
                        }
                    }
                    Op::Sync => wait_durable(&writer, model.last().copied().unwrap_or(0)),
                    Op::Reopen | Op::Garbage(_) | Op::Tear(_) => {
                        stop(&writer, thread);
                        let last = last_segment(dir.path());
                        let len = std::fs::metadata(&last).unwrap().len();
                        match op {
                            Op::Garbage(bytes) => {
                                use std::io::Write;
                                let mut f = std::fs::OpenOptions::new().append(true).open(&last).unwrap();
                                f.write_all(&bytes).unwrap();
                            }
                            Op::Tear(cut) if len > 0 => {
                                let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
                                f.set_len(len - cut.min(len)).unwrap();
                                // Frames here are 24 + 8..=10 bytes: any cut below that loses
                                // exactly the last one.
                                model.pop();
                            }
                            _ => {}
                        }
                        (writer, queue, thread) = start(dir.path(), segment_bytes);
                    }
                }
                let durable = *writer.durable.borrow();
                let expect: Vec<u64> = model.iter().copied().filter(|&s| s <= durable.seq).collect();
                proptest::prop_assert_eq!(read_all(&queue, durable, 0), expect.clone());
                let from = expect.len() as u64 / 2;
                proptest::prop_assert_eq!(
                    read_all(&queue, durable, from),
                    expect.iter().copied().filter(|&s| s > from).collect::<Vec<_>>()
                );
            }
            writer.close();
            thread.join().unwrap();
        }
    }
}
