//! The request mix: a JSON file of AuthZEN evaluation bodies, pre-serialized once into the order
//! workers send them.

use std::path::Path;

use anyhow::bail;
use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;

/// Largest allowed sum of weights (the schedule holds one entry per unit of weight).
const MAX_TOTAL_WEIGHT: u64 = 100_000;

/// Request bodies in send order: each body appears `weight` times, shuffled so that a worker's
/// consecutive requests are not all the same one.
#[derive(Debug)]
pub struct Mix {
    /// Pre-serialized bodies; a clone is a reference-count bump, not a copy.
    pub schedule: Vec<Bytes>,
    /// Number of distinct requests in the file.
    pub distinct: usize,
}

/// Reads a mix file (format in `bench::MIX_HELP`).
pub fn load(path: &Path) -> anyhow::Result<Mix> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the mix file `{}`", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("the mix file `{}` is not valid JSON", path.display()))?;
    from_value(value).with_context(|| format!("the mix file `{}`", path.display()))
}

fn from_value(value: Value) -> anyhow::Result<Mix> {
    let Value::Array(items) = value else {
        bail!("must be a JSON array of AuthZEN evaluation requests");
    };
    if items.is_empty() {
        bail!("holds no requests");
    }
    let distinct = items.len();
    let mut schedule = Vec::new();
    let mut total = 0u64;
    for (i, item) in items.into_iter().enumerate() {
        let (request, weight) = weighted(item).with_context(|| format!("item {i}"))?;
        total += weight;
        if total > MAX_TOTAL_WEIGHT {
            bail!("weights add up to more than {MAX_TOTAL_WEIGHT}; use smaller integers");
        }
        let body = Bytes::from(serde_json::to_vec(&request)?);
        schedule.extend(std::iter::repeat_n(body, weight as usize));
    }
    shuffle(&mut schedule);
    Ok(Mix { schedule, distinct })
}

/// `{"request": {...}, "weight": n}` or a bare request body (weight 1).
fn weighted(item: Value) -> anyhow::Result<(Value, u64)> {
    let Value::Object(mut obj) = item else {
        bail!("must be a JSON object");
    };
    if !obj.get("request").is_some_and(Value::is_object) {
        return Ok((Value::Object(obj), 1));
    }
    let weight = match obj.get("weight") {
        None => 1,
        Some(w) => match w.as_u64() {
            Some(n) if n >= 1 => n,
            _ => bail!("`weight` must be a positive integer, got {w}"),
        },
    };
    let request = obj.remove("request").unwrap_or(Value::Null);
    Ok((request, weight))
}

/// Fisher–Yates with a fixed-seed xorshift: the same file gives the same order on every run.
fn shuffle<T>(items: &mut [T]) {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = (state % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(id: &str) -> Value {
        json!({"subject": {"type": "User", "id": id}, "action": {"name": "view"},
               "resource": {"type": "Doc", "id": "d"}})
    }

    #[test]
    fn bare_and_weighted_items_mix() {
        let mix = from_value(json!([req("a"), {"request": req("b"), "weight": 3}])).unwrap();
        assert_eq!(mix.distinct, 2);
        assert_eq!(mix.schedule.len(), 4);
        let b = serde_json::to_vec(&req("b")).unwrap();
        assert_eq!(mix.schedule.iter().filter(|x| x[..] == b[..]).count(), 3);
    }

    #[test]
    fn bad_mixes_are_rejected() {
        assert!(from_value(json!({})).is_err());
        assert!(from_value(json!([])).is_err());
        assert!(from_value(json!([1])).is_err());
        assert!(from_value(json!([{"request": req("a"), "weight": 0}])).is_err());
        assert!(from_value(json!([{"request": req("a"), "weight": 1_000_000}])).is_err());
    }
}
