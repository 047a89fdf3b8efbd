//! Speculative decoding on hybrid (Gated DeltaNet + gated attention) targets, whose recurrent
//! state cannot be cut back like KV cells: the engine keeps the state after every token of a
//! verify batch and commits the one after the last accepted token, with no replay forward.
//! Tiny random models of tests/fixtures/hybrid/ (f32, CPU):
//!
//! 1. Rollback at every position: a scripted drafter that knows the plain greedy continuation
//!    and is wrong from a chosen position on, verify lengths 1..16, on qwen35, qwen35moe and
//!    qwen3next: speculative output == plain output, no extra target forward, and rejections
//!    really happened at every draft position. Engine level: after a verify of n tokens and
//!    `commit_accepted(start, a)` for every a in 0..=n, the next token's logits equal bit for bit
//!    those of an engine that evaluated the accepted prefix without any rollback.
//! 2. The real drafters on hybrid targets: n-gram lookup, a classic draft model (another tiny
//!    hybrid model; also rolled back in the middle of its drafts), random DFlash drafters.
//! 3. Sampling (T > 0, qwen35 and qwen3next): speculative sampling reproduces plain sampling
//!    seed by seed, and the first three tokens over 500 seeds follow the target's exact joint
//!    distribution (chi-square, alpha 1e-3, with a power check).
//! 4. Prompt-cache reuse through the recurrent-state checkpoint saved after each prompt.
//! 5. Verifies the engine cannot roll back in one piece: longer than n_ubatch (run in chunks)
//!    or than the per-token states it keeps (MAX_KEPT_TOKENS). These `verify_*` tests fail
//!    until the library handles them (see their comments).
//!
//! Verify batches are allowed to be inexact (`allow_inexact_batches`): on the CPU a batch of >= 2
//! rows uses other f32 matmul kernels than a one-token step (rows differ by ~2e-5, and
//! `Engine::largest_exact_batch` is 1 for these models). The greedy tests check that every plain
//! step's top1-top2 logit margin is above [`MIN_MARGIN`], 40x that rounding, so a verify's
//! argmax is the plain step's; the engine-level test compares bit for bit against a reference
//! computed in a batch too (rows of batches of >= 2 tokens are identical whatever the size).

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DrafterOptions};
use blockspec::decode::draft::model::{check_vocab, DraftModel};
use blockspec::decode::draft::ngram::NgramDrafter;
use blockspec::decode::draft::{DraftCost, Drafter, Features};
use blockspec::decode::generate::{generate, GenerateOptions, Generation, StopReason};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::{generate_speculative, SpecOptions, SpecParts, SpecStats};
use blockspec::dev::synth::{write_random_dflash, DraftSpec};
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use blockspec::text::tokenizer::Tokenizer;
use common::stats::{chi_square, chi_square_critical, exact_joint};
use std::collections::HashMap;

use common::hybrid::{fixture, Fixture, N_CTX, N_UBATCH};
/// Ids below this are regular tokens of the toy tokenizer (317..319 are special).
const N_REGULAR: u32 = 317;
/// Smallest top1-top2 logit margin a plain greedy step may have for the speculative run's
/// batched rows (~2e-5 from the one-token rows here) to give the same argmax. The continuations
/// used here have at least 2.4e-3.
const MIN_MARGIN: f32 = 1e-3;
/// The longest verify the scripted drafter fills.
const MAX_VERIFY: usize = 16;

fn greedy_opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(n),
        ignore_eos: true,
        ..Default::default()
    }
}

/// Plain greedy generation of `n` tokens; asserts every step's margin is at least MIN_MARGIN.
fn plain_greedy(e: &mut Engine, tok: &Tokenizer, what: &str, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        logprobs: Some(2),
        ..greedy_opts(n)
    };
    let mut s = Sampler::new(SamplingParams::greedy());
    let g = generate(e, tok, &mut s, prompt, &opts, |_| {}).expect("plain generation");
    assert_eq!(g.tokens.len(), n, "{what}: plain generation stopped early");
    for (i, lp) in g.logprobs.iter().enumerate() {
        let margin = lp.top[0].1 - lp.top[1].1;
        assert!(
            margin >= MIN_MARGIN,
            "{what}: plain step {i} has a top1-top2 margin of {margin:.2e} < {MIN_MARGIN:.0e}: \
             batched verify rows may pick another token there; choose another length"
        );
    }
    g.tokens
}

/// Greedy speculative generation of `n` tokens at a fixed verify length, batches of any size.
fn spec_greedy(
    e: &mut Engine,
    d: &mut dyn Drafter,
    tok: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    fixed_len: Option<usize>,
) -> (Generation, SpecStats) {
    generate_speculative(
        SpecParts {
            engine: e,
            drafter: d,
            tok,
            sampler: &mut Sampler::new(SamplingParams::greedy()),
        },
        prompt,
        opts,
        &mut SpecOptions {
            fixed_len,
            allow_inexact_batches: true,
            ..Default::default()
        },
        |_| {},
    )
    .expect("speculative generation")
}

/// A token that is not `t` (a wrong draft).
fn wrong(t: u32) -> u32 {
    (t + 1) % N_REGULAR
}

/// A drafter that knows the plain greedy continuation and follows a script of (verify length L,
/// position j) pairs, one per step: it drafts L - 1 tokens, right before position j and wrong
/// from j on (j == L - 1: all right). It records what the target accepted.
struct Scripted {
    script: Vec<(usize, usize)>,
    max_verify: usize,
    truth: Vec<u32>,
    /// Generated tokens committed so far: the next step's `last` is truth[done].
    done: usize,
    step: usize,
    /// The script step, drafts and j of the step being verified.
    in_flight: Option<(usize, usize, usize)>,
    /// Per draft position: steps rejected there.
    rejected_at: Vec<usize>,
    /// Per verify length: steps of that length, and steps of it whose drafts were all accepted.
    len_seen: Vec<usize>,
    full_at_len: Vec<usize>,
    /// What did not go as scripted.
    surprises: Vec<String>,
}

impl Scripted {
    fn new(script: Vec<(usize, usize)>) -> Scripted {
        let max_verify = script.iter().map(|s| s.0).max().expect("a script");
        Scripted {
            script,
            max_verify,
            truth: Vec::new(),
            done: 0,
            step: 0,
            in_flight: None,
            rejected_at: vec![0; max_verify],
            len_seen: vec![0; max_verify + 1],
            full_at_len: vec![0; max_verify + 1],
            surprises: Vec::new(),
        }
    }

    /// Four rounds of verify lengths 1..=16: every draft right (full acceptance at every
    /// length), wrong from the last draft (rejections at positions 0..=14), wrong from the first
    /// (position 0 at every length), wrong from the middle.
    fn every_position() -> Scripted {
        let rounds: [fn(usize) -> usize; 4] =
            [|l| l - 1, |l| l.saturating_sub(2), |_| 0, |l| (l - 1) / 2];
        let script = rounds
            .iter()
            .flat_map(|j| (1..=MAX_VERIFY).map(move |l| (l, j(l))))
            .collect();
        Scripted::new(script)
    }

    fn rounds_done(&self) -> bool {
        self.step >= self.script.len()
    }
}

impl Drafter for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn max_verify_len(&self) -> usize {
        self.max_verify
    }
    fn cost(&self) -> DraftCost {
        DraftCost::PerStep
    }
    fn begin(&mut self, _prompt: &[u32], _features: &[f32]) -> anyhow::Result<()> {
        self.done = 0;
        self.in_flight = None;
        Ok(())
    }
    fn draft(&mut self, last: u32, len: usize) -> anyhow::Result<Vec<u32>> {
        if self.truth.get(self.done) != Some(&last) {
            self.surprises.push(format!(
                "step {}: last token {last} at generated position {} is not the plain one {:?}",
                self.step,
                self.done,
                self.truth.get(self.done)
            ));
        }
        let step = self.step;
        let (l, j) = self.script[step % self.script.len()];
        let n = (l - 1).min(len - 1);
        // A step cut short by the token limit is played again in the next generation.
        if n == l - 1 {
            self.step += 1;
        }
        let j = j.min(n);
        let drafts: Vec<u32> = (0..n)
            .map(|i| {
                let t = self.truth.get(self.done + 1 + i).copied().unwrap_or(0);
                if i < j {
                    t
                } else {
                    wrong(t)
                }
            })
            .collect();
        self.in_flight = Some((step, n, j));
        Ok(drafts)
    }
    fn commit(&mut self, tokens: &[u32], _features: Features) -> anyhow::Result<()> {
        if let Some((step, n, j)) = self.in_flight.take() {
            let accepted = tokens.len() - 1;
            if accepted != j {
                self.surprises.push(format!(
                    "step {step}: {accepted} of {n} drafts accepted, expected {j}"
                ));
            }
            self.len_seen[n + 1] += 1;
            if j < n {
                self.rejected_at[j] += 1;
            } else {
                self.full_at_len[n + 1] += 1;
            }
        }
        self.done += tokens.len();
        Ok(())
    }
}

/// Rollback at every position on one target: see the file's doc, point 1.
fn rollback_at_every_position(name: &'static str) {
    let f = fixture(name);
    let mut plain_e = f.engine();
    let mut spec_e = f.engine();
    let mut d = Scripted::every_position();
    let mut generations = 0;
    let mut tokens = 0;
    'outer: for _ in 0..4 {
        for (pi, prompt) in f.prompts.iter().enumerate() {
            let n = (N_CTX - prompt.len() - 1).min(100);
            let what = format!("{name} prompt {pi} ({} tokens)", prompt.len());
            let plain = plain_greedy(&mut plain_e, &f.tok, &what, prompt, n);
            d.truth = plain.clone();
            let (g, stats) = spec_greedy(
                &mut spec_e,
                &mut d,
                &f.tok,
                prompt,
                &greedy_opts(n),
                Some(MAX_VERIFY),
            );
            assert!(d.surprises.is_empty(), "{what}: {:#?}", d.surprises);
            assert_eq!(g.tokens, plain, "{what}: speculative output != plain");
            assert_eq!(
                stats.target_forwards, stats.steps as u64,
                "{what}: target forwards vs steps (a rejection cost a forward)"
            );
            generations += 1;
            tokens += n;
            if d.rounds_done() {
                break 'outer;
            }
        }
    }
    eprintln!(
        "{name}: {generations} generations, {tokens} tokens, {} steps; rejected at positions 0..: \
         {:?}; full acceptances by verify length 1..: {:?}",
        d.step,
        d.rejected_at,
        &d.full_at_len[1..]
    );
    assert!(d.rounds_done(), "{name}: the script did not run to its end");
    for (j, &r) in d.rejected_at[..MAX_VERIFY - 1].iter().enumerate() {
        assert!(r > 0, "{name}: no rejection at draft position {j}");
    }
    for l in 1..=MAX_VERIFY {
        assert!(d.len_seen[l] > 0, "{name}: no verify of length {l}");
        assert!(
            d.full_at_len[l] > 0,
            "{name}: no fully accepted verify of length {l}"
        );
    }
}

#[test]
fn rollback_at_every_position_qwen35() {
    rollback_at_every_position("qwen35");
}

#[test]
fn rollback_at_every_position_qwen35moe() {
    rollback_at_every_position("qwen35moe");
}

#[test]
fn rollback_at_every_position_qwen3next() {
    rollback_at_every_position("qwen3next");
}

/// Up to a full context (64 cells, a 40-token prompt): the last steps' verifies shrink to the
/// room left, and speculative and plain decoding stop at the same token for the same reason.
#[test]
fn rollback_up_to_a_full_context() {
    let f = fixture("qwen35");
    let n_ctx = 64;
    let cfg = EngineConfig {
        n_ctx,
        n_ubatch: N_UBATCH,
        type_k: ggml::Type::F32,
        type_v: ggml::Type::F32,
        capture_layers: vec![],
    };
    let mut small = Engine::new(f.model.clone(), f.backend.clone(), cfg).expect("engine");
    let prompt = &f.prompts[2];
    let opts = GenerateOptions {
        max_tokens: None,
        ..greedy_opts(0)
    };
    let mut s = Sampler::new(SamplingParams::greedy());
    let plain = generate(&mut small, &f.tok, &mut s, prompt, &opts, |_| {}).expect("plain");
    assert_eq!(plain.stop, StopReason::Context);
    let n = plain.tokens.len();
    assert_eq!(
        n,
        n_ctx - prompt.len() + 1,
        "plain tokens up to a full context"
    );
    // The same tokens, their margins checked, from the big engine.
    let truth = plain_greedy(&mut f.engine(), &f.tok, "qwen35 prompt 2", prompt, n);
    assert_eq!(plain.tokens, truth);
    for script in [
        vec![(16, 15)],
        vec![(16, 10), (5, 2)],
        vec![(3, 0), (16, 14)],
    ] {
        let mut d = Scripted::new(script);
        d.truth = truth.clone();
        let (g, stats) = spec_greedy(&mut small, &mut d, &f.tok, prompt, &opts, Some(16));
        assert_eq!(g.stop, StopReason::Context, "speculative stop");
        assert_eq!(g.tokens, truth, "speculative output up to a full context");
        assert!(d.surprises.is_empty(), "{:#?}", d.surprises);
        assert_eq!(stats.target_forwards, stats.steps as u64);
        assert_eq!(small.n_past(), n_ctx, "the context is full");
    }
}

/// max |a - b|.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Deterministic regular token ids.
fn tokens(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 97 + salt * 31 + 5) % N_REGULAR)
        .collect()
}

/// Engine level: a verify of n tokens, `commit_accepted(start, a)`, then the next token. Its
/// logits must equal bit for bit those of a reference engine that evaluated prompt + the first a
/// batch tokens in one plain prefill (no verify, no rollback; its rows are computed by the same
/// batched kernels), and be within rounding of a token-by-token reference.
fn exact_state_after_commit(name: &'static str) {
    let f = fixture(name);
    let mut e = f.engine();
    let mut r = f.engine();
    // More than one token: a one-token prompt would run through the one-row kernels.
    let prompt = tokens(7, 1);
    let batch = tokens(32, 2);
    let next = 42;
    let mut worst_tbt = 0f32;
    for n in [2, 3, 8, 16, 32] {
        // Token by token for one length (the others are covered by the bit-exact reference).
        let token_by_token = n == 16;
        for a in 0..=n {
            e.reset();
            e.decode(&prompt, Outputs::Last).expect("prompt");
            let start = e.n_past();
            let v = e.decode(&batch[..n], Outputs::All).expect("verify");
            assert_eq!(v.n_rows(), n);
            e.commit_accepted(start, a);
            assert_eq!(e.n_past(), start + a, "{name}: n {n}, a {a}: n_past");
            let got = e.decode(&[next], Outputs::Last).expect("next");

            let seq: Vec<u32> = prompt.iter().chain(&batch[..a]).copied().collect();
            r.reset();
            r.decode(&seq, Outputs::Last).expect("reference prefill");
            let want = r.decode(&[next], Outputs::Last).expect("reference next");
            assert!(
                got.last() == want.last(),
                "{name}: verify of {n}, {a} accepted: next-token logits differ from the reference \
                 by up to {:.3e} (not bit for bit)",
                max_diff(got.last(), want.last())
            );

            if !token_by_token {
                continue;
            }
            r.reset();
            r.decode(&prompt, Outputs::Last).expect("reference prompt");
            for &t in &batch[..a] {
                r.decode(&[t], Outputs::Last).expect("reference token");
            }
            let tbt = r.decode(&[next], Outputs::Last).expect("reference next");
            let scale = tbt.last().iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = max_diff(got.last(), tbt.last()) / scale;
            assert!(
                d <= 1e-4,
                "{name}: verify of {n}, {a} accepted: next-token logits {d:.3e} (relative) from \
                 token-by-token decoding"
            );
            worst_tbt = worst_tbt.max(d);
        }
    }
    eprintln!("{name}: bit for bit at every commit; token by token within {worst_tbt:.2e}");

    // Anything that runs after a verify without a commit accepts all of it.
    e.reset();
    e.decode(&prompt, Outputs::Last).expect("prompt");
    e.decode(&batch[..16], Outputs::All).expect("verify");
    let got = e.decode(&[next], Outputs::Last).expect("next");
    let seq: Vec<u32> = prompt.iter().chain(&batch[..16]).copied().collect();
    r.reset();
    r.decode(&seq, Outputs::Last).expect("reference prefill");
    let want = r.decode(&[next], Outputs::Last).expect("reference next");
    assert!(
        got.last() == want.last(),
        "{name}: an uncommitted verify followed by a decode must keep all of it"
    );

    // `truncate` within the last verify, then back to a saved checkpoint.
    e.reset();
    e.decode(&prompt, Outputs::Last).expect("prompt");
    e.save_checkpoint().expect("checkpoint");
    let start = e.n_past();
    e.decode(&batch[..8], Outputs::All).expect("verify");
    assert_eq!(
        e.truncate(start + 5),
        start + 5,
        "{name}: truncate in the batch"
    );
    assert_eq!(
        e.truncate(start + 6),
        start + 5,
        "{name}: truncate cannot grow"
    );
    e.decode(&batch[5..7], Outputs::Last).expect("more");
    assert_eq!(e.truncate(start), start, "{name}: back to the checkpoint");
    let got = e.decode(&[next], Outputs::Last).expect("next");
    r.reset();
    r.decode(&prompt, Outputs::Last).expect("reference prompt");
    let want = r.decode(&[next], Outputs::Last).expect("reference next");
    assert!(
        got.last() == want.last(),
        "{name}: the state restored from the checkpoint differs"
    );
    // Before the checkpoint nothing can be kept: back to the start.
    assert_eq!(
        e.truncate(start - 1),
        0,
        "{name}: truncate before the checkpoint"
    );
}

#[test]
fn exact_state_after_commit_qwen35() {
    exact_state_after_commit("qwen35");
}

#[test]
fn exact_state_after_commit_qwen35moe() {
    exact_state_after_commit("qwen35moe");
}

#[test]
fn exact_state_after_commit_qwen3next() {
    exact_state_after_commit("qwen3next");
}

/// Speculative greedy generation with `d` on `f`'s target equals plain generation for `prompts`
/// (`n` tokens each) at each verify length of `lengths` (None: adaptive), with one target forward
/// per step; returns (drafted, accepted) over all of them.
fn lossless_with(
    f: &Fixture,
    spec_e: &mut Engine,
    d: &mut dyn Drafter,
    prompts: &[Vec<u32>],
    n: usize,
    lengths: &[Option<usize>],
) -> (usize, usize) {
    let mut plain_e = f.engine();
    let (mut drafted, mut accepted) = (0, 0);
    for (pi, prompt) in prompts.iter().enumerate() {
        let what = format!("{} prompt {pi} ({} tokens)", f.name, prompt.len());
        let plain = plain_greedy(&mut plain_e, &f.tok, &what, prompt, n);
        for &len in lengths {
            let (g, stats) = spec_greedy(spec_e, d, &f.tok, prompt, &greedy_opts(n), len);
            assert_eq!(
                g.tokens,
                plain,
                "{what}: {} drafts, verify length {len:?}: speculative output != plain",
                d.name()
            );
            assert_eq!(
                stats.target_forwards,
                stats.steps as u64,
                "{what}: {} drafts, verify length {len:?}: target forwards vs steps",
                d.name()
            );
            drafted += stats.drafted;
            accepted += stats.accepted;
        }
    }
    (drafted, accepted)
}

/// n-gram lookup on a hybrid target; returns (drafted, accepted).
fn ngram_on(name: &'static str) -> (usize, usize) {
    let f = fixture(name);
    let mut e = f.engine();
    let mut d = NgramDrafter::new(3, MAX_VERIFY).expect("ngram");
    let lengths = [Some(MAX_VERIFY), None];
    let (drafted, accepted) = lossless_with(&f, &mut e, &mut d, &f.prompts[..3], 64, &lengths);
    eprintln!("{name}: n-gram drafted {drafted}, accepted {accepted}");
    assert!(drafted > 0, "{name}: the n-gram lookup never proposed");
    (drafted, accepted)
}

// On these three the lookup finds short repeats whose continuations the target rejects.
#[test]
fn ngram_drafts_on_qwen35() {
    ngram_on("qwen35");
}

#[test]
fn ngram_drafts_on_qwen35moe() {
    ngram_on("qwen35moe");
}

#[test]
fn ngram_drafts_on_qwen3next() {
    ngram_on("qwen3next");
}

/// qwen35-tied falls into a loop of one or two tokens at once: the lookup's drafts are accepted.
#[test]
fn ngram_drafts_accepted_on_qwen35_tied() {
    let (drafted, accepted) = ngram_on("qwen35-tied");
    assert!(
        accepted * 2 > drafted,
        "n-gram drafts on a looping target: {accepted} of {drafted} accepted"
    );
}

/// A classic draft model (another tiny hybrid model with the same toy tokenizer) drafting for a
/// hybrid target: its own recurrent state goes back to the checkpoint it saves before drafting.
fn draft_model_for(target: &'static str, draft: &'static str) -> (usize, usize) {
    let f = fixture(target);
    let df = fixture(draft);
    check_vocab(&f.gguf, &df.gguf).expect("the tiny hybrid models share a tokenizer");
    let mut d = DraftModel::new(df.engine(), 6, 0.0).expect("draft model");
    let mut e = f.engine();
    let lengths = [Some(6), None];
    let (drafted, accepted) = lossless_with(&f, &mut e, &mut d, &f.prompts[1..3], 40, &lengths);
    eprintln!("{target} drafted by {draft}: drafted {drafted}, accepted {accepted}");
    assert!(drafted > 0, "{target} drafted by {draft}: no drafts");
    (drafted, accepted)
}

#[test]
fn draft_model_qwen35_for_qwen35moe() {
    draft_model_for("qwen35moe", "qwen35");
}

#[test]
fn draft_model_qwen35moe_for_qwen35() {
    draft_model_for("qwen35", "qwen35moe");
}

/// The same weights drafting: the drafts are the target's own greedy tokens, so they are
/// accepted (the other pairs, unrelated random models, are rejected at once).
#[test]
fn draft_model_qwen35_for_itself() {
    let (drafted, accepted) = draft_model_for("qwen35", "qwen35");
    assert_eq!(accepted, drafted, "the target's own tokens were rejected");
}

/// A random-weight DFlash drafter tapping two of the target's layers (its drafts are almost
/// never accepted): lossless, no extra forward.
fn random_dflash_drafter_on(name: &'static str) {
    let f = fixture(name);
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("random-dflash.gguf");
    let taps = vec![1, 2];
    let spec = DraftSpec {
        n_layer: 1,
        block_size: MAX_VERIFY,
        target_layers: taps.clone(),
        mask_token_id: N_REGULAR,
        seed: 7,
        scale: 0.02,
    };
    // The drafter's own feed-forward width (the MoE targets have none, or an unused default).
    let mut hp = f.model.hp.clone();
    hp.n_ff = 32;
    write_random_dflash(&path, &hp, &spec).expect("write the drafter");
    let mut e = f.engine_with(N_UBATCH, taps);
    let opts = DrafterOptions {
        cache_type: ggml::Type::F32,
        ..DrafterOptions::new(N_CTX)
    };
    let mut d = DFlashDrafter::load(&path, f.model.clone(), f.backend.clone(), &opts)
        .expect("load the drafter");
    let lengths = [Some(MAX_VERIFY), None];
    let (drafted, accepted) = lossless_with(&f, &mut e, &mut d, &f.prompts[1..3], 40, &lengths);
    eprintln!("{name}, random DFlash: drafted {drafted}, accepted {accepted}");
    assert!(drafted > 0, "{name}: the DFlash drafter never ran");
}

#[test]
fn random_dflash_drafter_on_qwen35() {
    random_dflash_drafter_on("qwen35");
}

#[test]
fn random_dflash_drafter_on_qwen35moe() {
    random_dflash_drafter_on("qwen35moe");
}

#[test]
fn random_dflash_drafter_on_qwen3next() {
    random_dflash_drafter_on("qwen3next");
}

/// A drafter whose drafts are `inner`'s, made wrong from a position that cycles 0, 1, ...
/// (wrapping at the number of drafts, which then all stay right): the target rejects there, so
/// `inner` is rolled back in the middle of its drafts. It records whether exactly the untouched
/// drafts were accepted every step.
struct Corrupting<D: Drafter> {
    inner: D,
    step: usize,
    in_flight: Option<(usize, usize)>,
    rejected_at: Vec<usize>,
    surprises: Vec<String>,
}

impl<D: Drafter> Drafter for Corrupting<D> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn max_verify_len(&self) -> usize {
        self.inner.max_verify_len()
    }
    fn cost(&self) -> DraftCost {
        self.inner.cost()
    }
    fn begin(&mut self, prompt: &[u32], features: &[f32]) -> anyhow::Result<()> {
        self.in_flight = None;
        self.inner.begin(prompt, features)
    }
    fn sync(&mut self) -> anyhow::Result<()> {
        self.inner.sync()
    }
    fn draft(&mut self, last: u32, len: usize) -> anyhow::Result<Vec<u32>> {
        let mut drafts = self.inner.draft(last, len)?;
        let j = self.step % (drafts.len() + 1);
        self.step += 1;
        for t in &mut drafts[j..] {
            *t = wrong(*t);
        }
        self.in_flight = Some((drafts.len(), j));
        Ok(drafts)
    }
    fn commit(&mut self, tokens: &[u32], features: Features) -> anyhow::Result<()> {
        if let Some((n, j)) = self.in_flight.take() {
            let accepted = tokens.len() - 1;
            if accepted != j {
                self.surprises.push(format!(
                    "step {}: {accepted} of {n} drafts accepted, expected {j}",
                    self.step - 1
                ));
            }
            if j < n {
                self.rejected_at[j] += 1;
            }
        }
        self.inner.commit(tokens, features)
    }
}

/// The classic draft model rolled back mid-draft: qwen35 drafting for itself (its drafts are the
/// target's greedy tokens) with its drafts made wrong from a cycling position. Its recurrent
/// state must come back exactly to the last accepted token (through its checkpoint and
/// re-evaluation of what it lost), or its next drafts stop being the target's tokens: so exactly
/// the untouched drafts are accepted at every step, and the output equals plain decoding.
#[test]
fn draft_model_rolled_back_mid_draft() {
    let f = fixture("qwen35");
    let df = fixture("qwen35");
    let inner = DraftModel::new(df.engine(), 8, 0.0).expect("draft model");
    let mut d = Corrupting {
        inner,
        step: 0,
        in_flight: None,
        rejected_at: vec![0; 8],
        surprises: Vec::new(),
    };
    let mut e = f.engine();
    let (drafted, accepted) =
        lossless_with(&f, &mut e, &mut d, &f.prompts[..3], 64, &[Some(8), None]);
    eprintln!(
        "qwen35 drafted by itself, corrupted: drafted {drafted}, accepted {accepted}, rejected \
         at positions 0..: {:?}",
        d.rejected_at
    );
    assert!(d.surprises.is_empty(), "{:#?}", d.surprises);
    for (j, &r) in d.rejected_at[..7].iter().enumerate() {
        assert!(r > 0, "no rejection at draft position {j}");
    }
}

/// A verify batch longer than the engine's n_ubatch runs in chunks. On a hybrid target every
/// chunk of 2..=32 tokens with all rows output keeps its per-token states instead of writing its
/// final state, so the next chunk must still start from the state after the previous one: its
/// rows equal those of one unchunked batch.
///
/// Fails today: `Engine::eval_chunk` (runtime/engine.rs) sets `keep_states` per chunk and
/// leaves the previous chunk's `pending` states uncommitted (they are settled only at the start
/// of `evaluate`), so the second chunk reads the state from before the first (rows off by ~85%).
#[test]
fn verify_in_chunks_continues_from_each_chunk() {
    let f = fixture("qwen35");
    let mut e = f.engine_with(8, vec![]);
    let mut r = f.engine();
    let prompt = tokens(7, 1);
    let batch = tokens(16, 2);
    r.reset();
    r.decode(&prompt, Outputs::Last).expect("prompt");
    let want = r.decode(&batch, Outputs::All).expect("one batch");
    e.reset();
    e.decode(&prompt, Outputs::Last).expect("prompt");
    let got = e.decode(&batch, Outputs::All).expect("two chunks");
    for i in 0..batch.len() {
        let scale = want.row(i).iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_diff(got.row(i), want.row(i)) / scale;
        assert!(
            d <= 1e-4,
            "row {i} of a 16-token verify in chunks of 8 differs from the unchunked batch by \
             {d:.3e} (relative): the second chunk did not start from the first chunk's state"
        );
    }
}

/// Speculation on a hybrid target whose n_ubatch (8) is below the verify length (up to 16):
/// however the engine splits or the loop caps such verifies, output == plain. Fails today (the
/// chunk bug above, and a commit inside the first chunk cannot be rolled back to).
#[test]
fn verify_longer_than_ubatch_is_lossless() {
    let f = fixture("qwen35");
    let mut plain_e = f.engine();
    let mut spec_e = f.engine_with(8, vec![]);
    let prompt = &f.prompts[1];
    let n = 64;
    let plain = plain_greedy(&mut plain_e, &f.tok, "qwen35 prompt 1", prompt, n);
    let mut d = Scripted::new(vec![(16, 15), (16, 3), (16, 10), (12, 9), (4, 1)]);
    d.truth = plain.clone();
    let (g, _) = spec_greedy(
        &mut spec_e,
        &mut d,
        &f.tok,
        prompt,
        &greedy_opts(n),
        Some(16),
    );
    assert_eq!(
        g.tokens, plain,
        "n_ubatch 8, verifies of 16: output != plain"
    );
    assert!(d.surprises.is_empty(), "{:#?}", d.surprises);
}

/// Verify lengths beyond the per-token states the engine keeps (MAX_KEPT_TOKENS = 32): a
/// rejection must still leave the target exactly after the accepted tokens (or the loop must
/// not verify that many at once on a hybrid target). Output == plain, one forward per step.
///
/// Fails today: such a verify keeps no per-token states, so `commit_accepted` falls back to the
/// prompt's checkpoint (or position 0), and `SpecRun::commit` (decode/spec/mod.rs) ignores
/// that the engine kept fewer positions than `start + rows`: the loop goes on from the wrong
/// state and position and the output is garbage (reachable with --spec-draft-n-max >= 32).
#[test]
fn verify_longer_than_the_kept_states() {
    let f = fixture("qwen35");
    let mut plain_e = f.engine();
    let mut spec_e = f.engine();
    let prompt = &f.prompts[1];
    let n = 64;
    let plain = plain_greedy(&mut plain_e, &f.tok, "qwen35 prompt 1", prompt, n);
    let mut d = Scripted::new(vec![(40, 3), (40, 39), (40, 20), (4, 1)]);
    d.truth = plain.clone();
    let (g, stats) = spec_greedy(
        &mut spec_e,
        &mut d,
        &f.tok,
        prompt,
        &greedy_opts(n),
        Some(40),
    );
    assert_eq!(g.tokens, plain, "verifies of 40 tokens: output != plain");
    assert!(d.surprises.is_empty(), "{:#?}", d.surprises);
    assert_eq!(stats.target_forwards, stats.steps as u64);
}

/// Sampling parameters of the T > 0 test: top-k 4 keeps the exact joint distribution of three
/// tokens small (at most 64 outcomes); the temperature spreads it.
fn sampling_params(temperature: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k: 4,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..Default::default()
    }
}

/// T > 0 on qwen35: speculative sampling reproduces plain sampling seed by seed (one draw per
/// committed token from the sampler's stream), and the first three tokens over many seeds follow
/// the exact joint distribution computed from the target's logits (chi-square, alpha 1e-3); the
/// same samples fail against the distribution at another temperature, so the check has power.
/// The drafter is the same model run greedily: its drafts are the most likely tokens, rejected
/// whenever the draw is another one.
fn sampling_on(name: &'static str) {
    let f = fixture(name);
    let temperature = 3.0;
    let depth = 3;
    let n_seeds = 500;
    let prompt = &f.prompts[1];
    let mut e = f.engine();
    let exact = exact_joint(&mut e, prompt, depth, &sampling_params(temperature, 0));
    let total: f64 = exact.values().sum();
    assert!((total - 1.0).abs() < 1e-4, "exact joint sums to {total}");
    let mut d = DraftModel::new(f.engine(), 3, 0.0).expect("draft model");
    let opts = greedy_opts(depth);
    let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
    let (mut drafted, mut accepted, mut forwards, mut steps) = (0, 0, 0, 0);
    for seed in 0..n_seeds {
        let p = sampling_params(temperature, seed);
        let plain = generate(
            &mut e,
            &f.tok,
            &mut Sampler::new(p.clone()),
            prompt,
            &opts,
            |_| {},
        )
        .expect("plain");
        let (spec, stats) = generate_speculative(
            SpecParts {
                engine: &mut e,
                drafter: &mut d,
                tok: &f.tok,
                sampler: &mut Sampler::new(p),
            },
            prompt,
            &opts,
            &mut SpecOptions {
                fixed_len: Some(3),
                allow_inexact_batches: true,
                ..Default::default()
            },
            |_| {},
        )
        .expect("speculative");
        assert_eq!(spec.tokens, plain.tokens, "seed {seed}: spec != plain");
        *counts.entry(spec.tokens.clone()).or_default() += 1;
        drafted += stats.drafted;
        accepted += stats.accepted;
        forwards += stats.target_forwards;
        steps += stats.steps;
    }
    assert_eq!(forwards, steps as u64, "target forwards vs steps");
    let (stat, df) = chi_square(&counts, &exact);
    let crit = chi_square_critical(df);
    let p_max = exact.values().fold(0f64, |m, &p| m.max(p));
    eprintln!(
        "{name} T {temperature}: {} outcomes (exact {}, most likely {p_max:.3}); chi-square {stat:.1} \
         on {df} df, critical {crit:.1}; drafted {drafted}, accepted {accepted}",
        counts.len(),
        exact.len()
    );
    assert!(
        stat < crit,
        "speculative samples vs the exact distribution: chi-square {stat:.1} >= {crit:.1} ({df} df)"
    );
    assert!(
        accepted > 0 && accepted < drafted,
        "drafts accepted {accepted} of {drafted}: both acceptance and rejection must occur"
    );
    let other = exact_joint(
        &mut e,
        prompt,
        depth,
        &sampling_params(temperature * 1.5, 0),
    );
    let (stat2, df2) = chi_square(&counts, &other);
    eprintln!(
        "against T {}: chi-square {stat2:.1} on {df2} df",
        temperature * 1.5
    );
    assert!(
        stat2 >= chi_square_critical(df2),
        "the chi-square check cannot tell T {temperature} from T {}: {stat2:.1} on {df2} df",
        temperature * 1.5
    );
}

#[test]
fn sampling_is_distributed_as_plain_sampling_qwen35() {
    sampling_on("qwen35");
}

#[test]
fn sampling_is_distributed_as_plain_sampling_qwen3next() {
    sampling_on("qwen3next");
}

/// The tokens a session's cache holds after a generation: the prompt and the generated tokens
/// the engine evaluated (as server::slots / session::Session record them).
fn cached_after(e: &Engine, prompt: &[u32], g: &Generation) -> Vec<u32> {
    prompt
        .iter()
        .chain(&g.tokens)
        .copied()
        .take(e.n_past())
        .collect()
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Prompt-cache reuse on a hybrid target through `generate`'s `reuse_kv`: the recurrent state
/// goes back only to a checkpoint saved after an earlier prompt (exactly at its length), else
/// the prompt is evaluated afresh; either way the output equals a fresh engine's.
#[test]
fn prompt_cache_reuse_on_qwen35() {
    let f = fixture("qwen35");
    let n = 12;
    let mut e = f.engine();
    let mut fresh = f.engine();
    let base = f.prompts[2].clone(); // 40 tokens
    let extend = |p: &[u32], salt: u32, k: usize| -> Vec<u32> {
        p.iter().copied().chain(tokens(k, salt)).collect()
    };
    // (prompt, positions expected from the cache)
    let p1 = base[..20].to_vec();
    let p2 = extend(&base, 3, 8); // extends p1: back to p1's checkpoint (20)
    let p3 = extend(&p2, 4, 5); // extends p2: its checkpoint (48)
    let p4 = extend(&base[..30], 5, 6); // shares 30 with p3: the checkpoint at 20
    let p5 = extend(&base[..10], 6, 9); // shares 10 with p4: no checkpoint that short, all again
                                        // The same prompt again: its last token must be evaluated, and the only checkpoint is at
                                        // its full length, so today it is all evaluated again (a checkpoint one token before a
                                        // prompt's end would let it reuse len - 1): either is right, nothing else.
    let p6 = p5.clone();
    let cases: [(&str, &Vec<u32>, usize); 6] = [
        ("first prompt", &p1, 0),
        ("extends the first", &p2, 20),
        ("extends the second", &p3, 48),
        ("shares 30 tokens with the third", &p4, 20),
        ("shares 10 tokens with the fourth", &p5, 0),
        ("the fifth again", &p6, usize::MAX),
    ];
    let mut cached: Vec<u32> = Vec::new();
    for (what, prompt, reused) in cases {
        let opts = GenerateOptions {
            reuse_kv: common_prefix(&cached, prompt),
            ..greedy_opts(n)
        };
        let mut s = Sampler::new(SamplingParams::greedy());
        let g = generate(&mut e, &f.tok, &mut s, prompt, &opts, |_| {}).expect("generate");
        let want = plain_greedy(&mut fresh, &f.tok, what, prompt, n);
        assert_eq!(g.tokens, want, "{what}: output != a fresh engine's");
        let reused = if reused == usize::MAX {
            assert!(
                [0, prompt.len() - 1].contains(&g.cached_prompt_n),
                "{what}: {} positions from the cache",
                g.cached_prompt_n
            );
            g.cached_prompt_n
        } else {
            reused
        };
        assert_eq!(
            (g.cached_prompt_n, g.timings.prompt_n),
            (reused, prompt.len() - reused),
            "{what} (reuse_kv {}): (positions from the cache, prompt tokens evaluated)",
            opts.reuse_kv
        );
        cached = cached_after(&e, prompt, &g);
    }
    // A follow-up turn: the last prompt, its answer, more. The state is at the end of what the
    // engine holds, so all of it is kept (no checkpoint needed).
    let p7: Vec<u32> = cached.iter().copied().chain(tokens(4, 7)).collect();
    let opts = GenerateOptions {
        reuse_kv: common_prefix(&cached, &p7),
        ..greedy_opts(n)
    };
    let mut s = Sampler::new(SamplingParams::greedy());
    let g = generate(&mut e, &f.tok, &mut s, &p7, &opts, |_| {}).expect("generate");
    let want = plain_greedy(&mut fresh, &f.tok, "follow-up turn", &p7, n);
    assert_eq!(g.tokens, want, "follow-up turn: output != a fresh engine's");
    assert_eq!(
        g.cached_prompt_n,
        cached.len(),
        "follow-up turn: positions from the cache"
    );

    // The same through speculative generation (n-gram drafts, which resume any prefix).
    let mut d = NgramDrafter::new(2, 8).expect("ngram");
    let mut cached: Vec<u32> = Vec::new();
    for (what, prompt, reused) in cases {
        let opts = GenerateOptions {
            reuse_kv: common_prefix(&cached, prompt),
            ..greedy_opts(n)
        };
        let (g, stats) = spec_greedy(&mut e, &mut d, &f.tok, prompt, &opts, Some(8));
        let want = plain_greedy(&mut fresh, &f.tok, what, prompt, n);
        assert_eq!(
            g.tokens, want,
            "{what} (speculative): output != a fresh engine's"
        );
        if reused != usize::MAX {
            assert_eq!(
                g.cached_prompt_n, reused,
                "{what} (speculative): positions from the cache"
            );
        }
        assert_eq!(stats.target_forwards, stats.steps as u64);
        cached = cached_after(&e, prompt, &g);
    }
}

/// A drafter that drafts nothing and keeps the prompt features it was given.
struct FeatureProbe {
    features: Vec<f32>,
}

impl Drafter for FeatureProbe {
    fn name(&self) -> &'static str {
        "feature probe"
    }
    fn max_verify_len(&self) -> usize {
        4
    }
    fn cost(&self) -> DraftCost {
        DraftCost::PerStep
    }
    fn begin(&mut self, _prompt: &[u32], features: &[f32]) -> anyhow::Result<()> {
        self.features = features.to_vec();
        Ok(())
    }
    fn draft(&mut self, _last: u32, _len: usize) -> anyhow::Result<Vec<u32>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _tokens: &[u32], _features: Features) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A DFlash drafter reads the target's hidden states of every prompt token. A hybrid target
/// evaluates a prompt in two parts (it keeps the state a token before the end); the drafter must
/// still get one feature row per prompt token, equal (within rounding) to the rows of the whole
/// prompt evaluated in one batch.
#[test]
fn the_drafter_gets_every_prompt_row_on_hybrid_targets() {
    for name in ["qwen35", "qwen3next"] {
        let f = fixture(name);
        let layers = vec![0, 1];
        let n_feat = layers.len() * f.model.hp.n_embd;
        let prompt = &f.prompts[2];
        let mut whole = f.engine_with(N_UBATCH, layers.clone());
        whole
            .decode(prompt, Outputs::Last)
            .expect("prompt in one batch");
        let want = whole.captured().to_vec();
        assert_eq!(want.len(), prompt.len() * n_feat);
        let mut e = f.engine_with(N_UBATCH, layers.clone());
        let mut probe = FeatureProbe {
            features: Vec::new(),
        };
        spec_greedy(&mut e, &mut probe, &f.tok, prompt, &greedy_opts(2), None);
        assert_eq!(
            probe.features.len(),
            want.len(),
            "{name}: feature rows for a prompt of {} tokens",
            prompt.len()
        );
        let d = max_diff(&probe.features, &want);
        assert!(d < 1e-3, "{name}: features differ by {d}");
    }
}
