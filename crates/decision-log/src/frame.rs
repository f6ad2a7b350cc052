//! Bytes ↔ frames: how one record sits in a segment file.
//!
//! ```text
//! | len: u32 | crc: u32 | seq: u64 | timestamp_ms: u64 | payload: len bytes |
//! ```
//!
//! All integers little-endian. `crc` is CRC-32 (IEEE) over `seq`, `timestamp_ms` and the payload, so
//! a torn write (a prefix of a frame) or flipped bits fail the check. `len` is not covered; a wrong
//! `len` makes the check fail over the wrong bytes, or runs past the end of the file. The timestamp
//! sits outside the payload so the status can report the age of the oldest unacknowledged record
//! without parsing JSON.

use crc32fast::Hasher;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 24;

/// Largest payload accepted; a larger `len` in a header is corruption.
pub(crate) const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: usize,
    pub(crate) crc: u32,
    pub(crate) seq: u64,
    pub(crate) timestamp_ms: u64,
}

impl Header {
    /// Reads a header; `None` if `len` is impossible.
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN]) -> Option<Self> {
        let (len, rest) = bytes.split_at(4);
        let (crc, rest) = rest.split_at(4);
        let (seq, ts) = rest.split_at(8);
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        if len > MAX_PAYLOAD {
            return None;
        }
        Some(Self {
            len,
            crc: u32::from_le_bytes(crc.try_into().ok()?),
            seq: u64::from_le_bytes(seq.try_into().ok()?),
            timestamp_ms: u64::from_le_bytes(ts.try_into().ok()?),
        })
    }

    /// Whether `payload` is the one this header was written for.
    pub(crate) fn check(&self, payload: &[u8]) -> bool {
        payload.len() == self.len && checksum(self.seq, self.timestamp_ms, payload) == self.crc
    }
}

/// Appends one frame to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, seq: u64, timestamp_ms: u64, payload: &[u8]) {
    let crc = checksum(seq, timestamp_ms, payload);
    // INVARIANT: callers reject payloads over MAX_PAYLOAD (< u32::MAX) before encoding.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(payload);
}

fn checksum(seq: u64, timestamp_ms: u64, payload: &[u8]) -> u32 {
    let mut h = Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&timestamp_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// What a scan of a whole segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Bytes of whole, valid frames from the start; anything after is torn or corrupt.
    pub(crate) valid_len: u64,
    /// Valid frames.
    pub(crate) records: u64,
    /// Sequence of the last valid frame.
    pub(crate) last_seq: Option<u64>,
}

/// Walks frames from the start of `bytes` until the end or the first frame that is not whole and
/// valid.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut at = 0usize;
    while let Some((header, payload)) = frame_at(bytes, at) {
        if !header.check(payload) {
            break;
        }
        at += HEADER_LEN + header.len;
        s.valid_len = at as u64;
        s.records += 1;
        s.last_seq = Some(header.seq);
    }
    s
}

fn frame_at(bytes: &[u8], at: usize) -> Option<(Header, &[u8])> {
    let head: &[u8; HEADER_LEN] = bytes.get(at..at + HEADER_LEN)?.try_into().ok()?;
    let header = Header::parse(head)?;
    let start = at + HEADER_LEN;
    let payload = bytes.get(start..start + header.len)?;
    Some((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 1..=n {
            encode(
                &mut out,
                seq,
                1000 + seq,
                format!("{{\"n\":{seq}}}").as_bytes(),
            );
        }
        out
    }

    #[test]
    fn round_trip() {
        let bytes = frames(3);
        let s = scan(&bytes);
        assert_eq!(s.records, 3);
        assert_eq!(s.last_seq, Some(3));
        assert_eq!(s.valid_len, bytes.len() as u64);
        let head: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        let h = Header::parse(head).unwrap();
        assert_eq!((h.seq, h.timestamp_ms, h.len), (1, 1001, 7));
    }

    #[test]
    fn every_prefix_of_the_last_frame_is_cut_off() {
        let whole = frames(3);
        let two = scan(&frames(2)).valid_len as usize;
        for cut in two..whole.len() {
            let s = scan(&whole[..cut]);
            assert_eq!((s.records, s.valid_len as usize), (2, two), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_prefix() {
        let mut bytes = frames(3);
        let two = scan(&frames(2)).valid_len as usize;
        bytes[two + HEADER_LEN + 2] ^= 0x10;
        assert_eq!(scan(&bytes).records, 2);
        let mut bytes = frames(3);
        bytes[two + 9] ^= 0x01; // inside seq
        assert_eq!(scan(&bytes).records, 2);
        let mut bytes = frames(3);
        bytes.extend_from_slice(&[0xff; 40]); // garbage with an impossible length
        assert_eq!(scan(&bytes).valid_len as usize, frames(3).len());
    }
}
