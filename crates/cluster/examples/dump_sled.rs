//! Writes every non-empty tree of a sled database out as files, `<out>/<tree>/<key>` holding the
//! value's bytes: the key as text when it is a plain word, else in hex. It made the raft fixtures
//! of older releases (crates/cluster/tests/fixtures/generate.sh); the formats test loads them
//! back into a fresh database.
//!
//! `cargo run -p verdict-cluster --example dump_sled -- <sled directory> <out directory>`

use std::fs;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: dump_sled <sled directory> <out directory>".into());
    };
    let db = sled::open(db)?;
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        if tree.is_empty() {
            continue;
        }
        let dir = Path::new(&out).join(String::from_utf8(name.to_vec())?);
        fs::create_dir_all(&dir)?;
        for pair in tree.iter() {
            let (key, value) = pair?;
            fs::write(dir.join(key_name(&key)), &value)?;
        }
    }
    Ok(())
}

/// A plain word (`vote`, `last_purged`) as itself, anything else (log indexes) in hex.
fn key_name(key: &[u8]) -> String {
    if !key.is_empty() && key.iter().all(|b| b.is_ascii_lowercase() || *b == b'_') {
        String::from_utf8_lossy(key).into_owned()
    } else {
        key.iter().map(|b| format!("{b:02x}")).collect()
    }
}
