//! The log's segments: one sled tree per run of consecutive indexes, so a purge drops whole trees
//! instead of deleting entry by entry (see `log_store` for why), and the key encoding they share.

use std::collections::BTreeMap;
use std::io;
use std::sync::RwLock;

/// Segment trees are named this, then the segment number in hex.
pub(crate) const SEGMENT_PREFIX: &[u8] = b"log.";

/// The segment trees by segment number. Reads hold the read lock while they iterate, and a tree
/// is dropped only under the write lock, so no read ever walks a dropped tree.
pub(crate) struct Segments {
    db: sled::Db,
    len: u64,
    trees: RwLock<BTreeMap<u64, sled::Tree>>,
}

impl Segments {
    pub(crate) fn open(db: sled::Db, len: u64) -> Result<Self, io::Error> {
        let mut trees = BTreeMap::new();
        for name in db.tree_names() {
            let Some(hex) = name.strip_prefix(SEGMENT_PREFIX) else {
                continue;
            };
            let number = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a log segment has a bad name")
                })?;
            trees.insert(number, db.open_tree(&name).map_err(io_err)?);
        }
        Ok(Self {
            db,
            len: len.max(1),
            trees: RwLock::new(trees),
        })
    }

    pub(crate) fn segment_of(&self, index: u64) -> u64 {
        index / self.len
    }

    pub(crate) fn read(
        &self,
    ) -> Result<std::sync::RwLockReadGuard<'_, BTreeMap<u64, sled::Tree>>, io::Error> {
        self.trees
            .read()
            .map_err(|_| io::Error::other("log segment lock poisoned"))
    }

    pub(crate) fn write(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, BTreeMap<u64, sled::Tree>>, io::Error> {
        self.trees
            .write()
            .map_err(|_| io::Error::other("log segment lock poisoned"))
    }

    /// The tree of segment `number`, created if it does not exist.
    pub(crate) fn tree(&self, number: u64) -> Result<sled::Tree, io::Error> {
        if let Some(tree) = self.read()?.get(&number) {
            return Ok(tree.clone());
        }
        let mut trees = self.write()?;
        if let Some(tree) = trees.get(&number) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(segment_name(number)).map_err(io_err)?;
        trees.insert(number, tree.clone());
        Ok(tree)
    }

    /// Writes entries, each segment's share as one batch, in index order.
    pub(crate) fn insert(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), io::Error> {
        let mut batches: BTreeMap<u64, sled::Batch> = BTreeMap::new();
        for (index, bytes) in entries {
            batches
                .entry(self.segment_of(index))
                .or_default()
                .insert(&key(index), bytes);
        }
        for (number, batch) in batches {
            self.tree(number)?.apply_batch(batch).map_err(io_err)?;
        }
        Ok(())
    }

    /// Drops every segment for which `doomed(number)` holds.
    pub(crate) fn drop_where(&self, doomed: impl Fn(u64) -> bool) -> Result<(), io::Error> {
        let mut trees = self.write()?;
        let numbers: Vec<u64> = trees.keys().copied().filter(|n| doomed(*n)).collect();
        for number in numbers {
            trees.remove(&number);
            self.db.drop_tree(segment_name(number)).map_err(io_err)?;
        }
        Ok(())
    }

    /// Drops the segments whose every index is at or below `index`.
    pub(crate) fn drop_through(&self, index: u64) -> Result<(), io::Error> {
        let len = self.len;
        self.drop_where(|n| n.saturating_add(1).saturating_mul(len) <= index.saturating_add(1))
    }
}

pub(crate) fn segment_name(number: u64) -> Vec<u8> {
    let mut name = SEGMENT_PREFIX.to_vec();
    name.extend_from_slice(format!("{number:016x}").as_bytes());
    name
}

pub(crate) fn io_err(e: sled::Error) -> io::Error {
    io::Error::other(format!("sled: {e}"))
}

pub(crate) fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn index_of(k: &[u8]) -> Result<u64, io::Error> {
    let bytes: [u8; 8] = k
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad log key"))?;
    Ok(u64::from_be_bytes(bytes))
}
