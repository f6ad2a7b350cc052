//! The revocation watermarks against a brute-force model: every event kept in a list and scanned
//! on every check (what Keystone did). Random events, prunes and tokens; after every step, every
//! token that could still be valid gets the same verdict from both.

use proptest::prelude::*;
use verdict_engine::revocation::Revocations;
use verdict_engine::revocation::Selector;
use verdict_engine::revocation::TokenFacts;

/// Longest token lifetime plus clock skew, in ms.
const HORIZON: u64 = 100;

#[derive(Debug, Clone)]
struct Token {
    jti: String,
    chain: String,
    sub: String,
    scope: Option<String>,
    iat: u64,
}

impl Token {
    fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            jti: &self.jti,
            aud_chain: &self.chain,
            sub: &self.sub,
            scope: self.scope.as_deref(),
            iat_ms: self.iat,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add(Selector, u64),
    /// Advance time by this much and prune with this budget.
    Prune(u64, usize),
    Check(Token),
}

fn name(prefix: &'static str, n: u8) -> impl Strategy<Value = String> {
    (0..n).prop_map(move |i| format!("{prefix}{i}"))
}

fn selector() -> impl Strategy<Value = Selector> {
    prop_oneof![
        name("t", 6).prop_map(|jti| Selector::Token { jti }),
        name("c", 3).prop_map(|chain| Selector::AuditChain { chain }),
        name("s", 3).prop_map(|sub| Selector::Subject { sub }),
        (name("s", 3), name("p", 2)).prop_map(|(sub, scope)| Selector::SubjectScope { sub, scope }),
    ]
}

fn token() -> impl Strategy<Value = Token> {
    (
        name("t", 6),
        name("c", 3),
        name("s", 3),
        prop::option::of(name("p", 2)),
        0u64..600,
    )
        .prop_map(|(jti, chain, sub, scope, iat)| Token {
            jti,
            chain,
            sub,
            scope,
            iat,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (selector(), 0u64..600).prop_map(|(s, t)| Op::Add(s, t)),
        1 => (0u64..60, 0usize..8).prop_map(|(dt, b)| Op::Prune(dt, b)),
        4 => token().prop_map(Op::Check),
    ]
}

fn model_revoked(events: &[(Selector, u64)], t: &Token) -> bool {
    events.iter().any(|(s, before)| {
        let matches = match s {
            Selector::Token { jti } => *jti == t.jti,
            Selector::AuditChain { chain } => *chain == t.chain,
            Selector::Subject { sub } => *sub == t.sub,
            Selector::SubjectScope { sub, scope } => {
                *sub == t.sub && t.scope.as_deref() == Some(scope.as_str())
            }
        };
        matches && t.iat < *before
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn watermarks_match_a_scan_of_every_event(ops in prop::collection::vec(op(), 1..80)) {
        let mut index = Revocations::default();
        let mut events: Vec<(Selector, u64)> = Vec::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Add(s, t) => {
                    index.add(&s, t);
                    events.push((s, t));
                }
                Op::Prune(dt, budget) => {
                    now += dt;
                    index.prune(now, HORIZON, budget);
                }
                Op::Check(t) => {
                    // Pruning may change the verdict only for tokens that have expired anyway.
                    if t.iat + HORIZON > now {
                        prop_assert_eq!(index.is_revoked(&t.facts()), model_revoked(&events, &t), "{:?}", t);
                    }
                }
            }
        }
        // Never more watermarks than distinct selectors.
        let mut distinct: Vec<&Selector> = events.iter().map(|(s, _)| s).collect();
        distinct.sort();
        distinct.dedup();
        prop_assert!(index.len() <= distinct.len());
    }

    #[test]
    fn pruning_with_enough_budget_keeps_only_live_watermarks(
        adds in prop::collection::vec((selector(), 0u64..600), 1..60),
        now in 0u64..800,
    ) {
        let mut index = Revocations::default();
        let mut latest = std::collections::BTreeMap::new();
        for (s, t) in &adds {
            index.add(s, *t);
            let e = latest.entry(s.clone()).or_insert(*t);
            *e = (*e).max(*t);
        }
        // A fresh index's sweep starts at the beginning; an unlimited budget covers everything.
        index.prune(now, HORIZON, usize::MAX);
        let live = latest.values().filter(|t| **t + HORIZON > now).count();
        prop_assert_eq!(index.len(), live);
    }
}
