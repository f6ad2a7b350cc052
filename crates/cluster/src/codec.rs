//! Every persisted or wire value is one format-version byte followed by bincode 1.3 (frozen): a node
//! can tell an encoding it does not know from a corrupt one, and a later release can add version 2
//! while still reading version 1 during a rolling upgrade.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The only format version this release writes.
pub const FORMAT_V1: u8 = 1;

/// Encodes `value` as `[FORMAT_V1] ++ bincode(value)`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    let mut out = vec![FORMAT_V1];
    bincode::serialize_into(&mut out, value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("encode: {e}")))?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => bincode::deserialize(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode: {e}"))),
        Some((v, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown format version {v}; this node reads version {FORMAT_V1}: upgrade it"),
        )),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "empty value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_version() {
        let bytes = encode(&(1u64, "x".to_string())).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        let back: (u64, String) = decode(&bytes).unwrap();
        assert_eq!(back, (1, "x".to_string()));
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode::<(u64, String)>(&bad).is_err());
        assert!(decode::<(u64, String)>(&[]).is_err());
    }
}
