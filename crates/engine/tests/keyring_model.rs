//! Model-based property tests of the key ring: random rotation sequences with random time gaps,
//! compared after every step with a trivial model (staged id, primary id, secondaries by demotion
//! time), plus the guarantee the ring exists for: every live token validates on the leader and on a
//! node one rotation behind it. And `validate` never panics, whatever it is given.

use std::collections::BTreeMap;

use proptest::prelude::*;
use verdict_engine::keyring::KeyId;
use verdict_engine::keyring::KeyRing;
use verdict_engine::keyring::KeyRingError;
use verdict_engine::keyring::KeyState;
use verdict_engine::keyring::RotationPolicy;
use verdict_engine::token::issue;
use verdict_engine::token::validate;
use verdict_engine::token::IssueRequest;

/// One log entry proposing a rotation.
#[derive(Debug, Clone)]
struct Op {
    /// How much true time passes before it (ms).
    gap_ms: u64,
    /// How far behind true time the leader's clock is when it stamps the entry (up to the skew).
    leader_lag_ms: u64,
}

fn policy() -> impl Strategy<Value = RotationPolicy> {
    (1u64..2000, 0u64..300, 3usize..7).prop_map(|(lifetime, skew, max)| RotationPolicy {
        token_lifetime_ms: lifetime,
        clock_skew_ms: skew,
        max_active_keys: max,
    })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Mostly short gaps, so the cap is hit often; sometimes long ones, so secondaries retire.
    let gap = prop_oneof![3 => 0u64..100, 1 => 0u64..3000];
    prop::collection::vec(
        (gap, 0u64..1000).prop_map(|(gap_ms, lag)| Op {
            gap_ms,
            leader_lag_ms: lag,
        }),
        1..30,
    )
}

/// The model: which id is staged, which primary, and when each secondary was demoted.
#[derive(Debug, Default)]
struct Model {
    staged: Option<u64>,
    primary: Option<u64>,
    secondaries: BTreeMap<u64, u64>,
    /// The latest time stamped by any rotation: the ring's time never moves back.
    time_ms: u64,
}

impl Model {
    /// Applies a rotation; `Err(earliest)` when refused.
    fn rotate(&mut self, id: u64, stamped_ms: u64, p: &RotationPolicy) -> Result<(), u64> {
        let now = self.time_ms.max(stamped_ms);
        let (Some(staged), Some(primary)) = (self.staged, self.primary) else {
            (self.primary, self.staged, self.time_ms) = (Some(0), Some(id), now);
            return Ok(());
        };
        let retire = |since: u64| since + p.token_lifetime_ms + p.clock_skew_ms;
        let mut alive: Vec<u64> = self
            .secondaries
            .values()
            .map(|&s| retire(s))
            .filter(|&t| t > now)
            .collect();
        if alive.len() + 3 > p.max_active_keys {
            alive.sort();
            return Err(alive[alive.len() + 3 - p.max_active_keys - 1]);
        }
        self.secondaries.retain(|_, s| retire(*s) > now);
        self.secondaries.insert(primary, now);
        (self.primary, self.staged, self.time_ms) = (Some(staged), Some(id), now);
        Ok(())
    }

    fn states(&self) -> Vec<(u64, KeyState)> {
        let mut all: Vec<(u64, KeyState)> = self
            .secondaries
            .iter()
            .map(|(&id, &since_ms)| (id, KeyState::Secondary { since_ms }))
            .collect();
        all.extend(self.primary.map(|id| (id, KeyState::Primary)));
        all.extend(self.staged.map(|id| (id, KeyState::Staged)));
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// A token the leader issued: its text, its expiry, and the key that issued it.
struct Issued {
    token: String,
    exp_ms: u64,
    kid: u64,
}

fn material(id: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..8].copy_from_slice(&id.to_le_bytes());
    m[31] = 0xA5;
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ring_matches_model_and_live_tokens_validate_everywhere(p in policy(), ops in ops()) {
        let mut model = Model::default();
        let mut leader = KeyRing::new();
        // A node that has applied every rotation but the latest.
        let mut lagging = KeyRing::new();
        let mut issued: Vec<Issued> = Vec::new();
        let mut true_ms = 1_000_000u64;
        for (step, op) in ops.iter().enumerate() {
            true_ms += op.gap_ms;
            let stamped = true_ms - op.leader_lag_ms.min(p.clock_skew_ms);
            let id = step as u64 + 1;

            let checked = leader.check_rotation(stamped, &p);
            let result = leader.rotate(KeyId(id), material(id), Some(material(0)), stamped, &p);
            let expected = model.rotate(id, stamped, &p);
            prop_assert_eq!(checked.is_ok(), result.is_ok());
            match (result, expected) {
                (Ok(next), Ok(())) => lagging = std::mem::replace(&mut leader, next),
                (Err(KeyRingError::RotationTooFast { earliest_ms, .. }), Err(want)) => {
                    // Refused: nothing changed, and the stated earliest time is exact.
                    prop_assert_eq!(earliest_ms, want);
                    prop_assert!(leader.check_rotation(earliest_ms - 1, &p).is_err());
                    prop_assert!(leader.check_rotation(earliest_ms, &p).is_ok());
                }
                (got, want) => prop_assert!(false, "ring {:?}, model {:?}", got, want),
            }

            // Same keys in the same states; so exactly one primary and one staged, ids unique.
            let states: Vec<(u64, KeyState)> =
                leader.list().iter().map(|k| (k.id.0, k.state)).collect();
            prop_assert_eq!(&states, &model.states());
            prop_assert!(states.len() <= p.max_active_keys);

            // The leader issues with its primary, at its own clock.
            let request = IssueRequest { sub: "alice".into(), ..IssueRequest::default() };
            let (token, claims) = issue(&leader, &p, request, stamped, format!("j-{step}"))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let kid = leader.primary().map(|k| k.id.0).unwrap_or(u64::MAX);
            issued.push(Issued { token, exp_ms: claims.exp_ms, kid });

            // Validators use true time. A live token validates on the leader and on the lagging
            // node (which holds the leader's primary as its staged key); an expired one is refused.
            let rings: &[&KeyRing] = if lagging.is_empty() { &[&leader] } else { &[&leader, &lagging] };
            for t in &issued {
                for ring in rings {
                    let got = validate(ring, &t.token, true_ms, p.clock_skew_ms);
                    if t.exp_ms + p.clock_skew_ms > true_ms {
                        prop_assert!(got.is_ok(), "key {} at {}: {:?}", t.kid, true_ms, got);
                    } else {
                        let code = got.err().map(|e| e.code());
                        prop_assert!(matches!(code, Some("token_expired" | "unknown_key")));
                    }
                }
            }
        }
    }

    #[test]
    fn validate_never_panics_on_random_input(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        text in ".{0,300}",
        shaped in "v4\\.local\\.[A-Za-z0-9_-]{0,300}(\\.[A-Za-z0-9_=+/-]{0,40}){0,2}",
    ) {
        let ring = KeyRing::new()
            .rotate(KeyId(1), material(1), Some(material(0)), 0, &RotationPolicy::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for input in [String::from_utf8_lossy(&bytes).into_owned(), text, shaped] {
            prop_assert!(validate(&ring, &input, 0, 0).is_err());
        }
    }

    #[test]
    fn a_changed_character_never_yields_other_claims(at in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.-]") {
        let p = RotationPolicy::default();
        let ring = KeyRing::new()
            .rotate(KeyId(1), material(1), Some(material(0)), 0, &p)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let request = IssueRequest { sub: "alice".into(), ..IssueRequest::default() };
        let (token, claims) = issue(&ring, &p, request, 0, "j".into())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = at.index(token.len());
        let mut changed = token.clone();
        changed.replace_range(i..i + 1, &c);
        // Changing the last character of a base64 part may leave its bytes equal; then, and only
        // then, the token is still the same token.
        if let Ok(got) = validate(&ring, &changed, 0, 0) {
            prop_assert_eq!(got, claims);
        }
    }
}
