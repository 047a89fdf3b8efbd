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
//! 2. The real drafters on hybrid targets: n-gram lookup, a classic (hybrid) draft model, a
//!    random DFlash drafter.
//! 3. Sampling (T > 0): speculative sampling reproduces plain sampling seed by seed, and the
//!    first tokens follow the target's exact joint distribution (chi-square).
//! 4. Prompt-cache reuse through the recurrent-state checkpoint saved after each prompt.
//!
//! Verify batches are allowed to be inexact (`allow_inexact_batches`): on the CPU a batch of >= 2
//! rows uses other f32 matmul kernels than a one-token step (rows differ by ~2e-5, and
//! `Engine::largest_exact_batch` is 1 for these models). The greedy tests check that every plain
//! step's top1-top2 logit margin is above [`MIN_MARGIN`], 40x that rounding, so a verify's
//! argmax is the plain step's; the engine-level test compares bit for bit against a reference
//! computed in a batch too (rows of batches of >= 2 tokens are identical whatever the size).

mod common;

use blockspec::decode::draft::{DraftCost, Drafter, Features};
use blockspec::decode::generate::{generate, GenerateOptions, Generation};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::decode::spec::{generate_speculative, SpecOptions, SpecParts, SpecStats};
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use blockspec::text::tokenizer::Tokenizer;
use std::sync::Arc;

const N_CTX: usize = 256;
const N_UBATCH: usize = 64;
/// Ids below this are regular tokens of the toy tokenizer (317..319 are special).
const N_REGULAR: u32 = 317;
/// Smallest top1-top2 logit margin a plain greedy step may have for the speculative run's
/// batched rows (~2e-5 from the one-token rows here) to give the same argmax. The continuations
/// used here have at least 2.4e-3.
const MIN_MARGIN: f32 = 1e-3;
/// The longest verify the scripted drafter fills.
const MAX_VERIFY: usize = 16;

/// One tiny fixture: its model on a CPU backend, its tokenizer and its reference prompts.
struct Fixture {
    tok: Tokenizer,
    model: Arc<Model>,
    backend: Arc<ggml::Backend>,
    /// The reference.json prompts (1, 7, 40 and 160 tokens).
    prompts: Vec<Vec<u32>>,
}

fn fixture(name: &'static str) -> Fixture {
    ggml::set_log_verbosity(false);
    let path = common::fixture(&format!("hybrid/{name}/model-f32.gguf"));
    let gguf = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model =
        Arc::new(Model::load_with(&gguf, &backend, false, false).expect("load the tiny model"));
    assert!(model.is_hybrid(), "{name}: not a hybrid model");
    let fx = common::read_json(&format!("hybrid/{name}/reference.json"));
    let prompts = fx["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| common::ids(&s["ids"]))
        .collect();
    Fixture {
        tok,
        model,
        backend,
        prompts,
    }
}

impl Fixture {
    fn engine_with(&self, n_ubatch: usize, capture_layers: Vec<usize>) -> Engine {
        let cfg = EngineConfig {
            n_ctx: N_CTX,
            n_ubatch,
            type_k: ggml::Type::F32,
            type_v: ggml::Type::F32,
            capture_layers,
        };
        Engine::new(self.model.clone(), self.backend.clone(), cfg).expect("engine")
    }
    fn engine(&self) -> Engine {
        self.engine_with(N_UBATCH, vec![])
    }
}

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
    /// The drafts and j of the step being verified.
    in_flight: Option<(usize, usize)>,
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
        let (l, j) = self.script[self.step % self.script.len()];
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
        self.in_flight = Some((n, j));
        Ok(drafts)
    }
    fn commit(&mut self, tokens: &[u32], _features: Features) -> anyhow::Result<()> {
        if let Some((n, j)) = self.in_flight.take() {
            let accepted = tokens.len() - 1;
            if accepted != j {
                self.surprises.push(format!(
                    "step {}: {accepted} of {n} drafts accepted, expected {j}",
                    self.step
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
