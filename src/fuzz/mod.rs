//! Property-based fuzz tests for every decoder of bytes that come from outside: a client, litd,
//! or the disk. One file per decoder family; each states what must hold for any input (round
//! trips, incremental = whole, no reading or allocating past what the input warrants, errors
//! as values), checked against arbitrary bytes and against structured inputs (valid encodings,
//! then mutated). Test-only: nothing here is compiled into litgate.
//!
//! Runs are bounded so `cargo test` stays fast and repeatable: each property runs [`CASES`]
//! cases from a fixed seed unless `PROPTEST_CASES` asks for more, from a random seed (the
//! README's "Fuzzing" section has the long run). Every
//! failure a run finds is kept as a plain `#[test]` next to the property it broke.
//!
//! Decoders tested elsewhere: the feature-config inspector's properties live with it
//! (`src/autopilot/feature_config/tests.rs`); the cache entry's plaintext reader is private to
//! its module, so its properties are in `cache_entry.rs` here, compiled as a child of
//! `src/cache/entry.rs`.

use proptest::{collection, prelude::*, test_runner::Config};

mod init;
mod macaroon;
mod rewrite;
mod websocket;
pub(crate) mod wire;

/// Cases per property in an ordinary `cargo test`.
pub(crate) const CASES: u32 = 64;

/// Seed of the bounded run: `cargo test` tries the same cases every time, so a red CI run is
/// a reproducible one. A long run (`PROPTEST_CASES`) or `PROPTEST_RNG_SEED` explores afresh.
const SEED: u64 = 0x006c_6974_6761_7465; // "litgate"

/// The run's configuration: [`CASES`] cases from [`SEED`], or what `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED` ask for (a long run).
pub(crate) fn config() -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = CASES;
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            c.rng_seed = proptest::test_runner::RngSeed::Fixed(SEED);
        }
    }
    c
}

/// Arbitrary bytes, up to `max` of them.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    collection::vec(any::<u8>(), 0..=max)
}

/// Cuts `input` into consecutive pieces at the given points (taken modulo its length), the
/// way a network may split it.
pub(crate) fn chunks<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// Where to cut an input (see [`chunks`]).
pub(crate) fn cuts() -> impl Strategy<Value = Vec<usize>> {
    collection::vec(any::<usize>(), 0..8)
}

/// Changes to make to a valid encoding: bytes overwritten, then a cut, then bytes appended.
#[derive(Debug, Clone)]
pub(crate) struct Mutation {
    writes: Vec<(usize, u8)>,
    cut: Option<usize>,
    tail: Vec<u8>,
}

impl Mutation {
    /// `input` with the mutation applied.
    pub(crate) fn apply(&self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        if !out.is_empty() {
            for &(i, b) in &self.writes {
                let n = out.len();
                out[i % n] = b;
            }
        }
        if let Some(c) = self.cut {
            out.truncate(c % (out.len() + 1));
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// A mutation: often none at all, so valid inputs are tested as such too.
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    (
        collection::vec((any::<usize>(), any::<u8>()), 0..3),
        proptest::option::weighted(0.3, any::<usize>()),
        proptest::option::weighted(0.2, bytes(8)),
    )
        .prop_map(|(writes, cut, tail)| Mutation {
            writes,
            cut,
            tail: tail.unwrap_or_default(),
        })
}

#[test]
fn chunks_cover_the_input_in_order() {
    let input = b"abcdefgh";
    let pieces = chunks(input, &[3, 3, 100, 0]);
    assert_eq!(pieces.concat(), input);
    assert!(pieces.iter().all(|p| !p.is_empty()));
    assert!(pieces.len() > 1);
}
