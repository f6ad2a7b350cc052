#![doc(hidden)]
//! The built-in lalrpop lexer
//!
//! This is the code for the built in lexer, and is linked by lalrpop generated parsers to provide
//! lexer support when you don't write a custom lexer.
//!
//! Typically you don't want to use APIs from this module directly, they are public to be accessed
//! by the generated parser.
use alloc::{fmt, vec::Vec};
use core::marker::PhantomData;

use crate::ParseError;

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::BuildError;
use regex_automata::nfa::thompson::Config as NfaConfig;
use regex_automata::util::syntax::Config as SyntaxConfig;
use regex_automata::{Anchored, Input, MatchKind};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Token<'input>(pub usize, pub &'input str);
impl fmt::Display for Token<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        fmt::Display::fmt(self.1, formatter)
    }
}

pub struct MatcherBuilder {
    dfa: DFA,
    skip_vec: Vec<bool>,
}

impl MatcherBuilder {
    #[allow(clippy::result_large_err)]
    pub fn new<S>(exprs: impl IntoIterator<Item = (S, bool)>) -> Result<MatcherBuilder, BuildError>
    where
        S: AsRef<str>,
    {
        let exprs = exprs.into_iter();
        let mut regex_vec = Vec::with_capacity(exprs.size_hint().0);
        let mut skip_vec = Vec::with_capacity(exprs.size_hint().0);
        for (regex, skip) in exprs {
            regex_vec.push(regex);
            skip_vec.push(skip);
        }

        let enable_unicode = cfg!(feature = "unicode");
        let dfa = DFA::builder()
            .configure(DFA::config().match_kind(MatchKind::All))
            .syntax(
                SyntaxConfig::new()
                    .unicode(enable_unicode)
                    .utf8(enable_unicode),
            )
            .thompson(NfaConfig::new().utf8(enable_unicode).shrink(true))
            .build_many(&regex_vec)?;

        Ok(MatcherBuilder { dfa, skip_vec })
    }

    pub fn matcher<'input, 'builder, E>(
        &'builder self,
        text: &'input str,
    ) -> Matcher<'input, 'builder, E> {
        let key = self as *const MatcherBuilder as usize;
        let cache = CACHES
            .with(|c| {
                let mut c = c.borrow_mut();
                let pos = c.iter().position(|(k, _)| *k == key)?;
                Some(c.swap_remove(pos).1)
            })
            .unwrap_or_else(|| self.dfa.create_cache());
        Matcher {
            text,
            consumed: 0,
            key,
            cache: Some(cache),
            dfa: &self.dfa,
            skip_vec: &self.skip_vec,
            _marker: PhantomData,
        }
    }
}

// Verdict's patch (see PATCH.md): the lazy DFA's cache is kept per thread and per builder and
// reused by the next parse, instead of being created empty for every parse and rebuilt state by
// state. A cache only ever holds states of its own DFA, keyed here by the builder's address;
// builders live in statics in the generated parsers, so an address is never reused for another.
std::thread_local! {
    static CACHES: std::cell::RefCell<Vec<(usize, Cache)>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct Matcher<'input, 'builder, E> {
    text: &'input str,
    consumed: usize,
    key: usize,
    cache: Option<Cache>,
    dfa: &'builder DFA,
    skip_vec: &'builder [bool],
    _marker: PhantomData<fn() -> E>,
}

impl<E> Drop for Matcher<'_, '_, E> {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.take() {
            let key = self.key;
            // At most one cache per builder and thread: a nested parse made a second one.
            let _ = CACHES.try_with(|c| {
                let mut c = c.borrow_mut();
                if !c.iter().any(|(k, _)| *k == key) {
                    c.push((key, cache));
                }
            });
        }
    }
}

impl<'input, E> Iterator for Matcher<'input, '_, E> {
    type Item = Result<(usize, Token<'input>, usize), ParseError<usize, Token<'input>, E>>;

    fn next(&mut self) -> Option<Self::Item> {
        let cache = self.cache.as_mut()?;
        loop {
            let text = self.text;
            let start_offset = self.consumed;
            if text.is_empty() {
                self.consumed = start_offset;
                return None;
            }

            // A reused cache may fill up and be cleared during a search, which invalidates state
            // ids held across it (the start state, a remembered match state). Search again from a
            // fresh start state if that happened; one token cannot fill an emptied cache.
            let mut match_ = None;
            for _attempt in 0..2 {
                let clears = cache.clear_count();
                match_ = None;
                let input = Input::new(text).anchored(Anchored::Yes);
                let mut state = self.dfa.start_state_forward(cache, &input).unwrap();
                'search: {
                    for (i, byte) in text.bytes().enumerate() {
                        state = self.dfa.next_state(cache, state, byte).unwrap();
                        if state.is_match() {
                            match_ = Some((state, i));
                        } else if state.is_dead() {
                            break 'search;
                        }
                    }
                    state = self.dfa.next_eoi_state(cache, state).unwrap();
                    if state.is_match() {
                        match_ = Some((state, text.len()));
                    }
                }
                if cache.clear_count() == clears {
                    break;
                }
            }

            let (match_state, longest_match) = match match_ {
                Some(match_) => match_,
                None => {
                    return Some(Err(ParseError::InvalidToken {
                        location: start_offset,
                    }))
                }
            };
            let index = (0..self.dfa.match_len(cache, match_state))
                .map(|n| {
                    self.dfa
                        .match_pattern(cache, match_state, n)
                        .as_usize()
                })
                .max()
                .unwrap();

            let result = &text[..longest_match];
            let remaining = &text[longest_match..];
            let end_offset = start_offset + longest_match;
            self.text = remaining;
            self.consumed = end_offset;

            if self.skip_vec[index] {
                if longest_match == 0 {
                    return Some(Err(ParseError::InvalidToken {
                        location: start_offset,
                    }));
                }
                continue;
            }

            return Some(Ok((start_offset, Token(index, result), end_offset)));
        }
    }
}
