//! Loading: a [`LoadConfig`] (model file, drafter, device, context, verify mode, threads) ->
//! a [`LoadedModel`] (target weights, tokenizer, drafter weights, memory plan checked against
//! the device).
//!
//! Error messages name the `blockspec` flag a field comes from (`--threads`, `--device`, ...):
//! the config is what those flags set, and the user fixes the flag.

use super::memory::MemoryPlan;
use super::{DraftSource, LoadedModel};
use crate::decode::draft::dflash::DFlashWeights;
use crate::format::gguf::Gguf;
use crate::model::Model;
use crate::text::tokenizer::Tokenizer;
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where to compute (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The first GPU if this build has a GPU backend and one is visible, else the CPU.
    Auto,
    Cpu,
    /// The N-th GPU ggml sees.
    Gpu(usize),
}

impl Device {
    /// `cpu`, `cuda[:N]`, `gpu[:N]` or `auto` (any case).
    pub fn parse(s: &str) -> Result<Device> {
        let d = s.to_ascii_lowercase();
        Ok(match d.as_str() {
            "cpu" => Device::Cpu,
            "auto" => Device::Auto,
            "cuda" | "gpu" => Device::Gpu(0),
            d => match d
                .strip_prefix("cuda:")
                .or_else(|| d.strip_prefix("gpu:"))
                .map(str::parse::<usize>)
            {
                Some(Ok(i)) => Device::Gpu(i),
                _ => bail!("--device {s:?}: expected cpu, cuda, cuda:N or auto"),
            },
        })
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(0) => f.write_str("cuda"),
            Device::Gpu(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The device and CPU threads a backend is opened with; kept by the [`LoadedModel`] so that
/// concurrent sessions can open backends of their own like it.
#[derive(Clone, Debug)]
pub struct BackendChoice {
    pub device: Device,
    /// Layers on the GPU (`-ngl`): 0 runs on the CPU.
    pub n_gpu_layers: usize,
    pub threads: usize,
}

impl BackendChoice {
    /// Open a backend on the chosen device.
    pub fn open(&self) -> Result<ggml::Backend> {
        let gpu_index = match self.device {
            Device::Cpu => None,
            Device::Auto => (!ggml::Backend::gpus().is_empty()).then_some(0),
            Device::Gpu(i) => Some(i),
        };
        match gpu_index {
            Some(i) if self.n_gpu_layers > 0 => {
                let b = ggml::Backend::gpu(i, self.threads)
                    .map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))?;
                tracing::info!("running on {}", b.name());
                Ok(b)
            }
            _ => Ok(ggml::Backend::cpu(self.threads)),
        }
    }
}

/// How speculative verification evaluates the target (`--verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// The fastest kernels and full blocks: every token is the target's choice computed in a
    /// batch (a tie within rounding may go the other way than in one-token decoding).
    Fast,
    /// Batch-invariant kernels: token for token the output of plain decoding with
    /// `batch_invariant`.
    Exact,
    /// The default. On a CPU backend: plain decoding's own kernels (repacked weights unless
    /// `batch_invariant`), and no verify batch larger than they compute exactly like one-token
    /// steps (measured at start), so the output is token for token plain decoding's, at plain
    /// decoding's speed. On a GPU: `Fast` (no batch-invariant kernels there yet).
    Auto,
}

impl VerifyMode {
    /// Its `--verify` spelling.
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::Fast => "fast",
            VerifyMode::Exact => "exact",
            VerifyMode::Auto => "auto",
        }
    }
}

/// Where drafts come from, and the drafter's settings.
#[derive(Clone, Debug)]
pub enum DraftConfig {
    None,
    /// A DFlash drafter (z-lab directory or DFlash GGUF).
    DFlash {
        path: PathBuf,
        /// `--draft-type`: quantize its float weights at load (q8_0 or q4_0).
        weight_type: Option<ggml::Type>,
        /// `--draft-ctx`: attend to at most this many past positions (0: all).
        window: usize,
        /// `--draft-vocab`: draft from the first this many token ids only.
        vocab: Option<usize>,
    },
    /// A classic draft model (an ordinary GGUF sharing the target's vocabulary).
    DraftModel {
        path: PathBuf,
        /// `--spec-draft-p-min`: stop drafting below this top probability.
        p_min: f32,
        /// `--spec-draft-n-max`: drafts per step at most.
        n_max: usize,
    },
    /// N-gram lookup in the token history.
    Ngram {
        /// `--spec-ngram-size-n`.
        n: usize,
        /// `--spec-draft-n-max`.
        n_max: usize,
    },
}

/// Everything loading needs: what the model flags of `blockspec run`, `bench` and `serve` set.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The target GGUF.
    pub model: PathBuf,
    pub device: Device,
    /// Layers on the GPU; below the model's layer count (but not 0) is refused (no partial
    /// offload yet).
    pub n_gpu_layers: usize,
    /// CPU threads (None: all available cores).
    pub threads: Option<usize>,
    /// Context size in tokens (None or 0: the model's training context, capped at 8192).
    pub n_ctx: Option<usize>,
    /// Largest batch evaluated in one graph.
    pub n_ubatch: usize,
    /// KV cache types.
    pub type_k: ggml::Type,
    pub type_v: ggml::Type,
    pub draft: DraftConfig,
    /// `--block-size`: verify exactly this many tokens per step.
    pub fixed_verify_len: Option<usize>,
    /// `--spec-tree`: DDTree nodes per step (0: chains); with `spec_tree_auto` the largest.
    pub spec_tree: usize,
    /// `--spec-tree auto`: plain, chain or tree each step, by measured speed.
    pub spec_tree_auto: bool,
    /// `--spec-accept`: which drafts a step keeps at temperature > 0.
    pub accept_rule: crate::decode::spec::AcceptRule,
    pub verify: VerifyMode,
    /// Batch-invariant kernels also without a drafter (speculation always uses them with
    /// [`VerifyMode::Exact`]).
    pub batch_invariant: bool,
    /// Show a progress bar while the weights load.
    pub show_progress: bool,
}

impl LoadConfig {
    /// The config for one of `n_slots` concurrent slots, as llama-server splits its flags: the
    /// context is the total, split evenly; without a thread count the cores are shared
    /// between the slots instead of oversubscribed.
    pub fn per_slot(mut self, n_slots: usize) -> Result<LoadConfig> {
        if let Some(c) = self.n_ctx.filter(|&c| c > 0) {
            let per_slot = c / n_slots;
            if per_slot == 0 {
                bail!("-c {c} split between {n_slots} slots leaves none");
            }
            self.n_ctx = Some(per_slot);
        }
        if self.threads.is_none() && n_slots > 1 {
            self.threads = Some((default_threads() / n_slots).max(1));
        }
        Ok(self)
    }
}

/// All available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
}

/// Open a GGUF file, saying plainly when it is not there.
pub fn open_gguf(path: &Path) -> Result<Gguf> {
    if !path.exists() {
        bail!("model file not found: {}", path.display());
    }
    Ok(Gguf::open(path)?)
}

/// Load the target (and the drafter's weights) once; sessions are made from the result.
///
/// The memory plan (weights, KV cache, features, drafter) is checked against the device's free
/// memory before anything is allocated.
pub fn load(cfg: &LoadConfig) -> Result<LoadedModel> {
    let gguf = open_gguf(&cfg.model)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let threads = cfg.threads.unwrap_or_else(default_threads);
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if cfg.fixed_verify_len == Some(0) {
        bail!("--block-size must be at least 1");
    }
    if cfg.n_ubatch == 0 {
        bail!("--ubatch-size must be at least 1");
    }
    let backend_choice = BackendChoice {
        device: cfg.device,
        n_gpu_layers: cfg.n_gpu_layers,
        threads,
    };
    let backend = Arc::new(backend_choice.open()?);
    let t0 = Instant::now();
    // `--verify exact`: batch-invariant target kernels, so a verify batch computes every row
    // exactly as a one-token step would and the output is the same token for token. `auto` on
    // a CPU: the plain kernels, with verify batches capped where they stay exact.
    let verify = match cfg.verify {
        VerifyMode::Auto if backend.is_cpu() => VerifyMode::Auto,
        VerifyMode::Auto => VerifyMode::Fast,
        v => v,
    };
    let fast_verify = verify == VerifyMode::Fast;
    let repack = match (&cfg.draft, verify) {
        (DraftConfig::None, _) | (_, VerifyMode::Auto) => !cfg.batch_invariant,
        (_, v) => v == VerifyMode::Fast,
    };
    let hp = crate::model::hparams_for(&gguf)?;
    // Memory plan, before anything is allocated: weights + KV cache (+ the drafter's file) must
    // fit the device; compute buffers are reserved (and reported) after.
    let n_ctx = match cfg.n_ctx {
        Some(0) | None => hp.n_ctx_train.min(8192),
        Some(c) => c,
    };
    let plan = MemoryPlan::new(cfg, &gguf, &hp, n_ctx)?;
    let mib = |b: usize| b as f64 / 1048576.0;
    tracing::info!("memory plan on {}: {}", backend.name(), plan.describe());
    let device_free_at_start = if backend.is_cpu() {
        // What is allocated beside the (memory-mapped) weights must fit the machine's memory:
        // refused here with the flag to change, instead of a failed allocation in ggml.
        let (_, total) = backend.memory();
        if total > 0 && plan.allocated() > total {
            bail!(
                "the KV cache and buffers for -c {n_ctx} need {:.0} MiB, more than this machine's {:.0} MiB of memory ({}); lower -c",
                mib(plan.allocated()),
                mib(total),
                plan.describe()
            );
        }
        None
    } else {
        let (free, total) = backend.memory();
        if plan.total() > free {
            bail!(
                "the model does not fit {}: it needs {} (for -c {n_ctx}); {:.0} of {:.0} MiB are free; lower -c or use a smaller model",
                backend.name(),
                plan.describe(),
                mib(free),
                mib(total)
            );
        }
        Some(free)
    };
    if !backend.is_cpu() && cfg.n_gpu_layers < hp.n_layer {
        bail!(
            "-ngl {}: partial offload is not supported yet; use -ngl 0 (CPU) or at least the model's layer count",
            cfg.n_gpu_layers
        );
    }
    let model = Arc::new(Model::load_with(
        &gguf,
        &backend,
        cfg.show_progress,
        repack,
    )?);
    let (draft, draft_verify_len) = match &cfg.draft {
        DraftConfig::None => (DraftSource::None, DEFAULT_DRAFT_BLOCK),
        DraftConfig::DFlash {
            path,
            weight_type,
            window,
            vocab,
        } => (
            DraftSource::DFlash {
                weights: DFlashWeights::load(path, &model, &backend, *weight_type)?,
                window: *window,
                vocab: *vocab,
            },
            DEFAULT_DRAFT_BLOCK,
        ),
        DraftConfig::DraftModel { path, p_min, n_max } => {
            let dg = open_gguf(path).context("--draft")?;
            crate::decode::draft::model::check_vocab(&gguf, &dg)?;
            // The draft model's rounding does not matter (the target decides): fast kernels.
            let dm = Arc::new(Model::load_with(&dg, &backend, cfg.show_progress, true)?);
            let source = DraftSource::DraftModel {
                model: dm,
                p_min: *p_min,
            };
            (source, n_max + 1)
        }
        DraftConfig::Ngram { n, n_max } => (DraftSource::Ngram { n: *n }, n_max + 1),
    };
    tracing::info!(
        "loaded {} ({:?}, {} layers) in {:.2}s",
        cfg.model.display(),
        model.hp.arch,
        model.hp.n_layer,
        t0.elapsed().as_secs_f64(),
    );
    Ok(LoadedModel {
        gguf,
        tokenizer,
        model,
        backend,
        n_ctx,
        n_ubatch: cfg.n_ubatch,
        type_k: cfg.type_k,
        type_v: cfg.type_v,
        draft,
        draft_verify_len,
        fast_verify,
        verify,
        fixed_verify_len: cfg.fixed_verify_len,
        spec_tree: cfg.spec_tree,
        spec_tree_auto: cfg.spec_tree_auto,
        accept_rule: cfg.accept_rule,
        backend_choice,
        planned_bytes: plan.total(),
        device_free_at_start,
        grammar_compiler: Default::default(),
    })
}

/// The longest verify of sources that take no `n_max` (`--spec-draft-n-max`'s default + 1);
/// only draft models and n-gram lookup read it.
const DEFAULT_DRAFT_BLOCK: usize = 16;
