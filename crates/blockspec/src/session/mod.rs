//! A loaded model and the generation sessions made from it.
//!
//! [`LoadedModel`] is what stays shared (weights, tokenizer, how drafters are made);
//! a [`Session`] is one sequence's state: its own KV cache, drafter and speculation policy,
//! plus the tokens its cache holds, so a follow-up prompt can reuse the common prefix. The CLI
//! runs one session; the server runs one per slot. [`load`] makes the [`LoadedModel`] from a
//! [`load::LoadConfig`]; [`memory`] plans its device memory first.

pub mod load;
pub mod memory;

use crate::decode::draft::dflash::{DFlashDrafter, DFlashWeights};
use crate::decode::draft::model::DraftModel;
use crate::decode::draft::ngram::NgramDrafter;
use crate::decode::draft::Drafter;
use crate::decode::generate::{generate, GenerateOptions, Generation};
use crate::decode::sampling::Sampler;
use crate::decode::spec::{generate_speculative, SpecOptions, SpecParts, SpecStats};
use crate::format::gguf::Gguf;
use crate::model::Model;
use crate::runtime::engine::{Engine, EngineConfig};
use crate::text::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use load::BackendChoice;
use std::sync::Arc;

/// Where a session's drafts come from.
pub enum DraftSource {
    /// Plain decoding.
    None,
    /// A DFlash drafter, its weights shared by every session (each makes its own draft cache
    /// and graphs over them).
    DFlash {
        weights: Arc<DFlashWeights>,
        window: usize,
        /// `--draft-vocab`: draft from the first this many token ids only.
        vocab: Option<usize>,
    },
    /// A classic draft model, its weights shared by every session.
    DraftModel { model: Arc<Model>, p_min: f32 },
    /// N-gram lookup in the token history (`n`: the n-gram size looked up).
    Ngram { n: usize },
}

/// Prompt chunk size of an exact prompt cache ([`Engine::align_prompts`]): a cache hit reuses a
/// multiple of it. Small enough that a chat's shared prefix is mostly reused, large enough that
/// prompt evaluation keeps its speed on a CPU.
pub const PROMPT_ALIGN: usize = 64;

/// A model loaded once, from which sessions are made.
pub struct LoadedModel {
    pub gguf: Gguf,
    pub tokenizer: Tokenizer,
    pub model: Arc<Model>,
    pub backend: Arc<ggml::Backend>,
    pub n_ctx: usize,
    pub n_ubatch: usize,
    pub type_k: ggml::Type,
    pub type_v: ggml::Type,
    pub draft: DraftSource,
    /// Longest verify of a draft model or n-gram drafter (its drafts + 1).
    pub draft_verify_len: usize,
    /// `--verify fast`: full verify blocks on the fastest kernels.
    pub fast_verify: bool,
    /// The `--verify` mode in force (`auto` resolved: `auto` on a CPU, `fast` on a GPU).
    pub verify: crate::session::load::VerifyMode,
    /// `--block-size`: a fixed verify length.
    pub fixed_verify_len: Option<usize>,
    /// `--spec-tree`: DDTree nodes per step (0: chains); with `spec_tree_auto` the largest.
    pub spec_tree: usize,
    /// `--spec-tree auto`: plain, chain or tree each step, by measured speed.
    pub spec_tree_auto: bool,
    /// `--spec-accept`: which drafts a step keeps at temperature > 0.
    pub accept_rule: crate::decode::spec::AcceptRule,
    /// The device and threads `backend` was opened with (see [`LoadedModel::open_backend`]).
    pub backend_choice: BackendChoice,
    /// The memory plan computed before loading (weights, caches, features, drafter).
    pub planned_bytes: usize,
    /// Free device memory before loading (GPU backends only).
    pub device_free_at_start: Option<usize>,
    /// The grammar compiler over `tokenizer`, built on first use ([`LoadedModel::grammars`]).
    pub grammar_compiler: std::sync::OnceLock<crate::decode::constrain::GrammarCompiler>,
}

impl LoadedModel {
    /// The grammar compiler for this model's vocabulary (built on the first call, then shared):
    /// `m.grammars()?.compile(&grammar)?` gives a request's `GenerateOptions::constraint`.
    pub fn grammars(&self) -> Result<&crate::decode::constrain::GrammarCompiler> {
        if let Some(c) = self.grammar_compiler.get() {
            return Ok(c);
        }
        let c = crate::decode::constrain::GrammarCompiler::new(&self.tokenizer)?;
        Ok(self.grammar_compiler.get_or_init(|| c))
    }

    /// Opens another backend like `backend`: concurrent sessions each compute on their own
    /// (a ggml CPU backend's work buffer is not shared safely between threads).
    pub fn open_backend(&self) -> Result<ggml::Backend> {
        self.backend_choice.open()
    }

    /// The first session, for a command that runs one: the memory plan plus the compute
    /// buffers it reserved are logged, and returned as the planned total.
    pub fn first_session(&self) -> Result<(Session, usize)> {
        let session = self.new_session()?;
        let compute = session.compute_bytes();
        let mib = |b: usize| b as f64 / 1048576.0;
        tracing::info!(
            "memory: planned {:.1} MiB before loading, + compute buffers {:.1} MiB = {:.1} MiB",
            mib(self.planned_bytes),
            mib(compute),
            mib(self.planned_bytes + compute)
        );
        Ok((session, self.planned_bytes + compute))
    }

    /// Device memory taken since before loading, as the device reports it through `engine`
    /// (GPU backends only).
    pub fn device_used_bytes(&self, engine: &Engine) -> Option<usize> {
        let free0 = self.device_free_at_start?;
        Some(free0.saturating_sub(engine.device_memory().0))
    }

    /// A fresh session on the model's backend: its own KV cache, drafter and length policy.
    pub fn new_session(&self) -> Result<Session> {
        self.new_session_on(self.backend.clone())
    }

    /// A fresh session computing on `backend` (see [`LoadedModel::open_backend`]).
    pub fn new_session_on(&self, backend: Arc<ggml::Backend>) -> Result<Session> {
        let drafter: Option<Box<dyn Drafter>> = match &self.draft {
            DraftSource::None => None,
            DraftSource::DFlash {
                weights,
                window,
                vocab,
            } => {
                let mut d = DFlashDrafter::new(
                    weights.clone(),
                    self.model.clone(),
                    backend.clone(),
                    self.n_ctx,
                    *window,
                    ggml::Type::F16,
                )?;
                if let Some(n) = vocab {
                    d.set_draft_vocab(*n)?;
                }
                Some(Box::new(d))
            }
            DraftSource::DraftModel { model, p_min } => {
                let cfg = EngineConfig {
                    n_ctx: self.n_ctx,
                    n_ubatch: self.n_ubatch,
                    type_k: ggml::Type::F16,
                    type_v: ggml::Type::F16,
                    capture_layers: vec![],
                };
                let de = Engine::new(model.clone(), backend.clone(), cfg)?;
                Some(Box::new(DraftModel::new(
                    de,
                    self.draft_verify_len,
                    *p_min,
                )?))
            }
            DraftSource::Ngram { n } => {
                Some(Box::new(NgramDrafter::new(*n, self.draft_verify_len)?))
            }
        };
        if let (Some(d), Some(b)) = (&drafter, self.fixed_verify_len) {
            if b > d.max_verify_len() {
                bail!(
                    "--block-size {b}: the drafter fills verifies of at most {} tokens",
                    d.max_verify_len()
                );
            }
        }
        let cfg = EngineConfig {
            n_ctx: self.n_ctx,
            n_ubatch: self.n_ubatch,
            type_k: self.type_k,
            type_v: self.type_v,
            capture_layers: drafter
                .as_ref()
                .map(|d| d.target_layers().to_vec())
                .unwrap_or_default(),
        };
        let on_cpu = backend.is_cpu();
        let mut engine = Engine::new(self.model.clone(), backend, cfg)?;
        // Exact verification (the default `auto` on a CPU) comes with an exact prompt cache: the
        // same request gives the same output whatever the cache holds.
        if on_cpu && self.verify != crate::session::load::VerifyMode::Fast {
            engine.align_prompts(PROMPT_ALIGN);
        }
        let spec = SpecOptions {
            fixed_len: self.fixed_verify_len,
            allow_inexact_batches: self.fast_verify,
            policy: None,
            replay: None,
            tree_budget: self.spec_tree,
            tree_auto: self.spec_tree_auto,
            tree_policy: None,
            tree_chain_seed: false,
            accept_rule: self.accept_rule,
        };
        Ok(Session {
            engine,
            drafter,
            spec,
            cached: Vec::new(),
        })
    }
}

/// One sequence's state: KV cache, drafter, the length policy it learned, and the tokens whose
/// KV the cache holds (for prompt reuse).
pub struct Session {
    pub engine: Engine,
    pub drafter: Option<Box<dyn Drafter>>,
    pub spec: SpecOptions,
    /// Tokens at KV positions 0.. that are valid in `engine` (prompt + generated).
    cached: Vec<u32>,
}

impl Session {
    /// Compute buffers reserved by the engine and the drafter.
    pub fn compute_bytes(&self) -> usize {
        self.engine.compute_bytes() + self.drafter.as_ref().map_or(0, |d| d.compute_bytes())
    }

    /// Generate from `prompt`, speculatively when the session has a drafter. With
    /// `reuse_prompt`, the KV of the longest common prefix with the previous generation's
    /// tokens is kept (a prompt cache); otherwise everything is evaluated afresh.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        sampler: &mut Sampler,
        prompt: &[u32],
        opts: &GenerateOptions,
        reuse_prompt: bool,
        on_text: impl FnMut(&str),
    ) -> Result<(Generation, Option<SpecStats>)> {
        let mut opts = opts.clone();
        // A drafter that reads target features must be able to keep the prefix's state
        // (DFlash keeps its draft KV); otherwise the whole prompt is evaluated again.
        let resumable = self.drafter.as_ref().is_none_or(|d| d.resumes_prefix());
        opts.reuse_kv = if reuse_prompt && resumable {
            common_prefix(&self.cached, prompt)
        } else {
            0
        };
        // Whatever happens below, the cache is only trusted again once it is recorded.
        self.cached.clear();
        let result = match self.drafter.as_mut() {
            Some(d) => generate_speculative(
                SpecParts {
                    engine: &mut self.engine,
                    drafter: d.as_mut(),
                    tok,
                    sampler,
                },
                prompt,
                &opts,
                &mut self.spec,
                on_text,
            )
            .map(|(g, s)| (g, Some(s))),
            None => {
                generate(&mut self.engine, tok, sampler, prompt, &opts, on_text).map(|g| (g, None))
            }
        };
        if let Ok((g, _)) = &result {
            // KV positions 0..n_past hold the prompt and the committed tokens in order (a step
            // may have committed a few tokens past a stop; those are simply not reused).
            let valid = self.engine.n_past();
            self.cached = prompt
                .iter()
                .chain(&g.tokens)
                .copied()
                .take(valid)
                .collect();
        }
        result
    }

    /// Every token's hidden state after the final norm (`tokens.len() x n_embd`, token-major;
    /// see [`Engine::hidden_states`]), evaluated from an empty cache. The cache is empty
    /// afterwards too: the next generation starts afresh.
    pub fn hidden_states(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.clear_cache();
        let rows = self.engine.hidden_states(tokens);
        self.clear_cache();
        rows
    }

    /// The tokens whose KV the cache holds (prompt + generated of the last generation).
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Between requests: free the graphs built for this request's prompt length.
    pub fn drop_prompt_graphs(&mut self) {
        self.engine.drop_prompt_graphs();
    }

    /// Forget the cached prompt (the next generation evaluates everything).
    pub fn clear_cache(&mut self) {
        self.cached.clear();
        self.engine.reset();
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
