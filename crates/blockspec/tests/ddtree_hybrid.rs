//! DDTree on hybrid (Gated DeltaNet + gated attention) targets: each tree node's recurrent state
//! follows from its parent's (the recurrent layers go down the tree one depth level at a time),
//! and the state after the accepted path's last node is committed without another forward.
//! Tiny random models of tests/fixtures/hybrid/ (f32, CPU):
//!
//! 1. Engine level: random trees of 2 to 17 rows; for every node, the tree verify, the commit of
//!    the path to it, then the next token: its logits equal bit for bit those of an engine that
//!    evaluated the prompt and the path as one prefill (rows of batches of >= 2 tokens are
//!    computed by the same kernels whatever the batch, see hybrid_spec.rs). A tree dropped
//!    without a commit leaves the state before it.
//! 2. Greedy decoding with an oracle drafter that ranks the true continuation at chosen places
//!    (accepted paths of many depths, through non-first branches, rejections at every depth):
//!    tree output == plain output, one target forward per step, on qwen35, qwen35moe, qwen3next.
//! 3. A random DFlash drafter tapping the target's layers: tree output == plain output.

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::draft::Drafter;
use blockspec::decode::generate::{generate, GenerateOptions, Generation};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::{generate_speculative, SpecOptions, SpecParts, SpecStats};
use blockspec::dev::synth::{write_random_dflash, DraftSpec};
use blockspec::runtime::engine::tree::TreeBatch;
use blockspec::runtime::engine::{Engine, Outputs};
use common::oracle::Oracle;
use std::collections::BTreeSet;

use common::hybrid::{fixture, Fixture, N_CTX, N_UBATCH};
/// Ids below this are regular tokens of the toy tokenizer (317..319 are special).
const N_REGULAR: u32 = 317;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A random tree of `n` rows (row 0 the root; every other row's parent one of the rows before
/// it, often the one just before, so that trees are deep as well as wide).
fn random_tree(n: usize, rng: &mut Lcg) -> (Vec<u32>, Vec<usize>, Vec<usize>) {
    let (mut tokens, mut parents, mut depths) = (vec![], vec![0], vec![0]);
    for i in 0..n {
        tokens.push((rng.next() % N_REGULAR as u64) as u32);
        if i > 0 {
            let p = if rng.next().is_multiple_of(2) {
                i - 1
            } else {
                (rng.next() as usize) % i
            };
            parents.push(p);
            depths.push(depths[p] + 1);
        }
    }
    (tokens, parents, depths)
}

/// The rows from the root to `j`, increasing.
fn path_to(parents: &[usize], j: usize) -> Vec<usize> {
    let mut path = vec![j];
    let mut i = j;
    while i != 0 {
        i = parents[i];
        path.push(i);
    }
    path.reverse();
    path
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn exact_state_after_tree_commit(name: &'static str) {
    let f = fixture(name);
    let mut e = f.engine();
    let mut r = f.engine();
    let mut rng = Lcg(17);
    let prompt: Vec<u32> = (0..7)
        .map(|_| (rng.next() % N_REGULAR as u64) as u32)
        .collect();
    let next = 42;
    let mut depths_seen = BTreeSet::new();
    for n in [2, 5, 9, 17] {
        let (tokens, parents, depths) = random_tree(n, &mut rng);
        // Padded rows too (they hang under the root and must not disturb the real ones).
        let padded = n + 2;
        for j in 0..n {
            e.reset();
            e.decode(&prompt, Outputs::Last).expect("prompt");
            let start = e.n_past();
            let tree = TreeBatch {
                tokens: &tokens,
                parents: &parents,
                depths: &depths,
            };
            let logits = e.decode_tree(tree, padded).expect("tree verify");
            assert_eq!(logits.n_rows(), n);
            let path = path_to(&parents, j);
            e.commit_tree_path(start, &path).expect("commit");
            assert_eq!(e.n_past(), start + path.len(), "{name}: n_past");
            let got = e.decode(&[next], Outputs::Last).expect("next");

            let seq: Vec<u32> = prompt
                .iter()
                .copied()
                .chain(path.iter().map(|&i| tokens[i]))
                .collect();
            r.reset();
            r.decode(&seq, Outputs::Last).expect("reference prefill");
            let want = r.decode(&[next], Outputs::Last).expect("reference next");
            assert!(
                got.last() == want.last(),
                "{name}: tree of {n}, path {path:?}: next-token logits differ from the reference \
                 by up to {:.3e} (not bit for bit)",
                max_diff(got.last(), want.last())
            );
            // The tree's own logits for the path's last node are the prefill's last row.
            r.reset();
            let all = r.decode(&seq, Outputs::All).expect("reference rows");
            let want_row = all.row(seq.len() - 1).to_vec();
            assert!(
                logits.row(j) == want_row.as_slice(),
                "{name}: tree of {n}: row {j}'s logits differ from the prefill's by {:.3e}",
                max_diff(logits.row(j), &want_row)
            );
            depths_seen.insert(depths[j]);
        }
    }
    assert!(depths_seen.len() >= 6, "depths {depths_seen:?}");

    // A tree dropped without a commit: the state is the one before it.
    e.reset();
    e.decode(&prompt, Outputs::Last).expect("prompt");
    let start = e.n_past();
    let (tokens, parents, depths) = random_tree(6, &mut rng);
    let tree = TreeBatch {
        tokens: &tokens,
        parents: &parents,
        depths: &depths,
    };
    e.decode_tree(tree, 6).expect("tree verify");
    assert_eq!(
        e.truncate(start + 3),
        start,
        "{name}: a dropped tree keeps nothing"
    );
    let got = e.decode(&[next], Outputs::Last).expect("next");
    r.reset();
    r.decode(&prompt, Outputs::Last).expect("reference prompt");
    let want = r.decode(&[next], Outputs::Last).expect("reference next");
    assert!(
        got.last() == want.last(),
        "{name}: the state after a dropped tree differs from the one before it"
    );
}

#[test]
fn exact_state_after_tree_commit_qwen35() {
    exact_state_after_tree_commit("qwen35");
}

#[test]
fn exact_state_after_tree_commit_qwen35moe() {
    exact_state_after_tree_commit("qwen35moe");
}

#[test]
fn exact_state_after_tree_commit_qwen3next() {
    exact_state_after_tree_commit("qwen3next");
}

fn greedy_opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(n),
        ignore_eos: true,
        ..Default::default()
    }
}

fn plain(f: &Fixture, e: &mut Engine, prompt: &[u32], n: usize) -> Generation {
    generate(
        e,
        &f.tok,
        &mut Sampler::new(SamplingParams::greedy()),
        prompt,
        &greedy_opts(n),
        |_| {},
    )
    .expect("plain")
}

/// Greedy speculative decoding with trees of `budget` nodes (inexact batches allowed: on the
/// CPU a batch's f32 matmuls round unlike a one-token step's, ~2e-5 here, far below these
/// continuations' margins; see hybrid_spec.rs).
fn tree(
    f: &Fixture,
    e: &mut Engine,
    drafter: &mut dyn Drafter,
    prompt: &[u32],
    n: usize,
    budget: usize,
) -> (Generation, SpecStats) {
    generate_speculative(
        SpecParts {
            engine: e,
            drafter,
            tok: &f.tok,
            sampler: &mut Sampler::new(SamplingParams::greedy()),
        },
        prompt,
        &greedy_opts(n),
        &mut SpecOptions {
            allow_inexact_batches: true,
            tree_budget: budget,
            ..Default::default()
        },
        |_| {},
    )
    .expect("tree")
}

fn check_stats(name: &str, s: &SpecStats, budget: usize) {
    assert_eq!(s.target_forwards, s.steps as u64, "{name}: forwards");
    assert!(s.spec_steps > 0, "{name}: no tree step");
    assert_eq!(s.drafted, s.spec_steps * budget, "{name}: nodes offered");
}

fn oracle_trees_on(name: &'static str) {
    let f = fixture(name);
    let mut e = f.engine();
    let mut lengths = BTreeSet::new();
    for (i, prompt) in f.prompts[1..3].iter().enumerate() {
        let want = plain(&f, &mut e, prompt, 40);
        let mut truth = prompt.clone();
        truth.extend_from_slice(&want.tokens);
        for budget in [4, 8, 16] {
            let what = format!("{name}, prompt {i}, budget {budget}");
            let mut oracle = Oracle {
                truth: truth.clone(),
                known: 0,
                depth: 7,
                n_vocab: N_REGULAR,
                rng: (i * 100 + budget) as u64,
                layers: vec![],
                feats: vec![],
            };
            let (g, s) = tree(&f, &mut e, &mut oracle, prompt, 40, budget);
            assert_eq!(g.tokens, want.tokens, "{what}: output differs from plain");
            check_stats(&what, &s, budget);
            lengths.extend(s.accept_lengths.iter().copied());
        }
    }
    // Paths of many depths accepted (1: rejected at the root, 8: the whole depth + bonus).
    assert!(lengths.len() >= 6, "{name}: accepted lengths {lengths:?}");
}

#[test]
fn oracle_trees_on_qwen35() {
    oracle_trees_on("qwen35");
}

#[test]
fn oracle_trees_on_qwen35moe() {
    oracle_trees_on("qwen35moe");
}

#[test]
fn oracle_trees_on_qwen3next() {
    oracle_trees_on("qwen3next");
}

/// `--spec-tree auto`: steps switch between plain, chains and trees of several budgets (the
/// oracle's chain is its top-ranked candidates); the output stays the plain output, one target
/// forward per step, and trees were in fact tried.
fn oracle_auto_on(name: &'static str) {
    let f = fixture(name);
    let mut e = f.engine();
    let prompt = &f.prompts[1];
    let want = plain(&f, &mut e, prompt, 64);
    let mut truth = prompt.clone();
    truth.extend_from_slice(&want.tokens);
    // A fixed chain length keeps every step speculative whatever the timings (see
    // ddtree_lossless.rs), so the tree policy tries its budgets.
    let mut spec = SpecOptions {
        allow_inexact_batches: true,
        tree_budget: 16,
        tree_auto: true,
        fixed_len: Some(8),
        ..Default::default()
    };
    // Two generations: the policies carry over, as in a server slot. The first one explores
    // the budgets between chain steps whatever the timings; in the second, the trees may win
    // every step (the oracle's trees accept more than its chain), so chain steps are asked of
    // the first only.
    for round in 0..2 {
        let mut oracle = Oracle {
            truth: truth.clone(),
            known: 0,
            depth: 7,
            n_vocab: N_REGULAR,
            rng: 11 + round,
            layers: vec![],
            feats: vec![],
        };
        let (g, s) = generate_speculative(
            SpecParts {
                engine: &mut e,
                drafter: &mut oracle,
                tok: &f.tok,
                sampler: &mut Sampler::new(SamplingParams::greedy()),
            },
            prompt,
            &greedy_opts(64),
            &mut spec,
            |_| {},
        )
        .expect("auto");
        assert_eq!(
            g.tokens, want.tokens,
            "{name}, round {round}: output differs from plain"
        );
        assert_eq!(s.target_forwards, s.steps as u64, "{name}: forwards");
        assert!(
            !s.trees.is_empty(),
            "{name}, round {round}: no tree tried ({s:?})"
        );
        assert!(
            s.trees.iter().all(|&(b, _)| [4, 8, 15].contains(&b)),
            "{name}: budgets {:?}",
            s.trees
        );
        if round == 0 {
            let tree_steps: usize = s.trees.iter().map(|&(_, c)| c).sum();
            assert!(s.spec_steps > tree_steps, "{name}: no chain step ({s:?})");
        }
    }
}

#[test]
fn oracle_auto_on_qwen35() {
    oracle_auto_on("qwen35");
}

#[test]
fn oracle_auto_on_qwen3next() {
    oracle_auto_on("qwen3next");
}

/// A random-weight DFlash drafter tapping two of the target's layers: its trees are almost
/// never accepted past the root; the features it reads come from the tree's compacted rows.
#[test]
fn random_dflash_trees_on_qwen35() {
    let f = fixture("qwen35");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("random-dflash.gguf");
    let taps = vec![1, 2];
    let spec = DraftSpec {
        n_layer: 1,
        block_size: 8,
        target_layers: taps.clone(),
        mask_token_id: N_REGULAR,
        seed: 7,
        scale: 0.02,
    };
    write_random_dflash(&path, &f.model.hp, &spec).expect("write the drafter");
    let mut e = f.engine_with(N_UBATCH, taps);
    let opts = DrafterOptions {
        cache_type: ggml::Type::F32,
        ..DrafterOptions::new(N_CTX)
    };
    let mut d = DFlashDrafter::load(&path, f.model.clone(), f.backend.clone(), &opts)
        .expect("load the drafter");
    for prompt in &f.prompts[1..3] {
        let want = plain(&f, &mut e, prompt, 32);
        for budget in [4, 12] {
            let (g, s) = tree(&f, &mut e, &mut d, prompt, 32, budget);
            assert_eq!(g.tokens, want.tokens, "budget {budget}: output differs");
            check_stats(&format!("budget {budget}"), &s, budget);
        }
    }
}
