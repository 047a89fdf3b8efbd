//! The flags several commands share: loading a model (turned into a [`LoadConfig`]) and
//! sampling.

use crate::decode::sampling::SamplingParams;
use crate::session::load::{Device, DraftConfig, LoadConfig, VerifyMode};
use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub(super) struct ModelArgs {
    /// Model GGUF file.
    #[arg(short = 'm', long = "model")]
    pub(super) model: PathBuf,
    /// CPU threads (default: all available cores).
    #[arg(short = 't', long = "threads")]
    pub(super) threads: Option<usize>,
    /// Where to run: cpu, cuda[:N] (also gpu[:N]: the N-th GPU ggml sees), or auto (the first
    /// GPU if this build has a GPU backend and one is visible, else the CPU).
    #[arg(long = "device", default_value = "auto")]
    pub(super) device: String,
    /// Layers on the GPU (also -ngl): 0 runs everything on the CPU; any number >= the model's
    /// layer count (default) puts the whole model on the GPU. Partial offload is not supported yet.
    #[arg(long = "n-gpu-layers", default_value_t = 999)]
    pub(super) n_gpu_layers: usize,
    /// Context size in tokens (default: the model's training context, capped at 8192).
    #[arg(short = 'c', long = "ctx-size")]
    pub(super) ctx_size: Option<usize>,
    /// Largest batch evaluated in one graph (also -ub).
    #[arg(long = "ubatch-size", default_value_t = 512)]
    pub(super) ubatch: usize,
    /// KV cache type for K: f16, q8_0, q4_0, f32 (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub(super) cache_type_k: String,
    /// KV cache type for V (also -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub(super) cache_type_v: String,
    /// Show ggml's log and debug messages.
    #[arg(short = 'v', long)]
    pub(super) verbose: bool,
    /// Drafter for speculative decoding: a z-lab DFlash directory or a DFlash GGUF (also -md).
    #[arg(long = "draft", visible_alias = "model-draft")]
    pub(super) draft: Option<PathBuf>,
    /// Draft source: dflash, draft (a classic draft model), ngram, none. Also accepts llama.cpp's
    /// --spec-type spellings (draft-dflash, draft-simple, ngram-simple, none).
    #[arg(long = "spec", visible_alias = "spec-type")]
    pub(super) spec: Option<String>,
    /// Verify exactly this many tokens per step (1 up to the drafter's longest verify: a DFlash
    /// drafter's block size, or --spec-draft-n-max + 1) instead of choosing the length that pays
    /// on this machine.
    #[arg(long = "block-size")]
    pub(super) fixed_verify_len: Option<usize>,
    /// DDTree: verify a tree of this many drafted tokens per step, built from the DFlash
    /// drafter's per-position candidates, instead of a chain (0: chains). On a hybrid target at
    /// most 31 (every node's recurrent state is kept). `auto`: each step plain, the chain or a
    /// tree of budget 4, 8, 15, 22 or 32 (up to what fits), whichever is measured fastest here.
    #[arg(long = "spec-tree", default_value = "0")]
    pub(super) spec_tree: String,
    /// Which drafts a step keeps at temperature > 0: `rejection` (speculative rejection
    /// sampling with the DFlash drafter's probabilities; exact in distribution) or `match`
    /// (a draft is kept when it equals the target's own draw; reproduces plain sampling seed
    /// for seed). Other drafters always match.
    #[arg(long = "spec-accept", default_value = "match")]
    pub(super) spec_accept: String,
    /// At most this many drafts per step for a draft model or n-gram lookup (the length is
    /// still chosen adaptively below it). DFlash drafts up to its trained block size - 1.
    #[arg(long = "spec-draft-n-max", default_value_t = 15)]
    pub(super) draft_n_max: usize,
    /// A draft model stops drafting when its top probability falls below this (0: never).
    #[arg(
        long = "spec-draft-p-min",
        visible_alias = "draft-p-min",
        default_value_t = 0.0
    )]
    pub(super) draft_p_min: f32,
    /// N-gram lookup: the n-gram size looked up in the token history (shorter ones down to 2
    /// are tried when it is not found).
    #[arg(
        long = "spec-ngram-size-n",
        visible_alias = "spec-ngram-simple-size-n",
        default_value_t = 3
    )]
    pub(super) ngram_n: usize,
    /// Quantize a DFlash drafter's float weights at load: q8_0 or q4_0 (default: as stored).
    #[arg(long = "draft-type")]
    pub(super) draft_type: Option<String>,
    /// Attend to at most this many past positions in the drafter (0: all; the target is unaffected).
    #[arg(long = "draft-ctx", default_value_t = 0)]
    pub(super) draft_ctx: usize,
    /// A DFlash drafter drafts from the first N token ids only: its head reads N rows of the
    /// target's output matrix instead of all (BPE ids are in merge order, common tokens first).
    /// The output does not change; rarer tokens are just never drafted. Default: all.
    #[arg(long = "draft-vocab")]
    pub(super) draft_vocab: Option<usize>,
    /// How speculative verification evaluates the target. `auto` (default): on a CPU, plain
    /// decoding's kernels and no more tokens per step than they compute exactly like one-token
    /// steps (measured at start), so the output is token for token plain decoding's; on a GPU,
    /// `fast`. `fast`: the fastest kernels and full blocks; every token is the target's own
    /// choice, computed in a batch, so where two tokens tie within rounding it may take the
    /// other one than one-token decoding would (as llama.cpp does). `exact`: kernels whose rows
    /// do not depend on the batch size (no weight repacking), and no more tokens per step than
    /// that holds for: the output is token for token that of plain decoding with
    /// `--batch-invariant` (slower on CPUs).
    #[arg(long = "verify", default_value = "auto")]
    pub(super) verify: String,
    /// Use batch-size-independent kernels (no weight repacking) also without a drafter, so plain
    /// decoding reproduces speculative output token for token. Speculation always uses them.
    #[arg(long = "batch-invariant")]
    pub(super) batch_invariant: bool,
}

/// The speculative decoding mode a command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpecKind {
    /// Plain decoding.
    None,
    DFlash,
    /// A classic draft model (`-md` with an ordinary GGUF).
    DraftModel,
    /// N-gram lookup in the token history.
    Ngram,
}

impl ModelArgs {
    /// The load config these flags ask for; `show_progress` shows a progress bar while the
    /// weights load.
    pub(super) fn load_config(&self, show_progress: bool) -> Result<LoadConfig> {
        let spec = self.spec_kind()?;
        let verify = self.verify_mode()?;
        let device = Device::parse(&self.device)?;
        let type_k = ggml::Type::parse(&self.cache_type_k)
            .with_context(|| format!("--cache-type-k: unknown type {:?}", self.cache_type_k))?;
        let type_v = ggml::Type::parse(&self.cache_type_v)
            .with_context(|| format!("--cache-type-v: unknown type {:?}", self.cache_type_v))?;
        let weight_type = match &self.draft_type {
            None => None,
            Some(name) => match ggml::Type::parse(name) {
                Some(t) if [ggml::Type::Q8_0, ggml::Type::Q4_0].contains(&t) => Some(t),
                _ => bail!("--draft-type {name:?}: expected q8_0 or q4_0"),
            },
        };
        if weight_type.is_some() && spec != SpecKind::DFlash {
            bail!("--draft-type applies to DFlash drafters only");
        }
        if self.draft_vocab.is_some() && spec != SpecKind::DFlash {
            bail!("--draft-vocab applies to DFlash drafters only");
        }
        let draft = match (spec, &self.draft) {
            (SpecKind::DFlash, Some(p)) => DraftConfig::DFlash {
                path: p.clone(),
                weight_type,
                window: self.draft_ctx,
                vocab: self.draft_vocab,
            },
            (SpecKind::DraftModel, Some(p)) => DraftConfig::DraftModel {
                path: p.clone(),
                p_min: self.draft_p_min,
                n_max: self.draft_n_max,
            },
            (SpecKind::Ngram, _) => DraftConfig::Ngram {
                n: self.ngram_n,
                n_max: self.draft_n_max,
            },
            _ => DraftConfig::None,
        };
        Ok(LoadConfig {
            model: self.model.clone(),
            device,
            n_gpu_layers: self.n_gpu_layers,
            threads: self.threads,
            n_ctx: self.ctx_size,
            n_ubatch: self.ubatch,
            type_k,
            type_v,
            draft,
            fixed_verify_len: self.fixed_verify_len,
            spec_tree: self.spec_tree_budget()?,
            spec_tree_auto: self.spec_tree == "auto",
            accept_rule: self.accept_rule()?,
            verify,
            batch_invariant: self.batch_invariant,
            show_progress,
        })
    }

    /// The rule from `--spec-accept`.
    fn accept_rule(&self) -> Result<crate::decode::spec::AcceptRule> {
        use crate::decode::spec::AcceptRule;
        match self.spec_accept.as_str() {
            "match" => Ok(AcceptRule::Match),
            "rejection" => Ok(AcceptRule::Rejection),
            other => bail!("--spec-accept {other:?}: expected match or rejection"),
        }
    }

    /// The `--spec-tree` budget: a node count, 0 for chains, or (`auto`) 0 for "the largest
    /// that fits".
    fn spec_tree_budget(&self) -> Result<usize> {
        match self.spec_tree.as_str() {
            "auto" => Ok(0),
            n => n.parse().map_err(|_| {
                anyhow::anyhow!("--spec-tree {n:?}: expected a node count (0: chains) or auto")
            }),
        }
    }

    /// The `--verify` mode.
    fn verify_mode(&self) -> Result<VerifyMode> {
        match self.verify.as_str() {
            "auto" => Ok(VerifyMode::Auto),
            "exact" => Ok(VerifyMode::Exact),
            "fast" => Ok(VerifyMode::Fast),
            other => bail!("--verify {other:?}: expected auto, exact or fast"),
        }
    }

    /// The mode from --spec, or from what --draft points at (a DFlash drafter or a model).
    fn spec_kind(&self) -> Result<SpecKind> {
        let is_dflash = |p: &Path| {
            crate::decode::draft::dflash::is_dflash(p)
                .with_context(|| format!("--draft {}", p.display()))
        };
        let kind = match (self.spec.as_deref(), &self.draft) {
            (None, None) | (Some("none"), _) => SpecKind::None,
            (None, Some(p)) => {
                if is_dflash(p)? {
                    SpecKind::DFlash
                } else {
                    SpecKind::DraftModel
                }
            }
            (Some("dflash" | "draft-dflash"), Some(p)) => {
                if !is_dflash(p)? {
                    bail!(
                        "--spec dflash: {} is not a DFlash drafter (use --spec draft for a classic draft model)",
                        p.display()
                    );
                }
                SpecKind::DFlash
            }
            (Some("draft" | "draft-simple"), Some(p)) => {
                if is_dflash(p)? {
                    bail!(
                        "--spec draft: {} is a DFlash drafter (use --spec dflash)",
                        p.display()
                    );
                }
                SpecKind::DraftModel
            }
            (Some(k @ ("dflash" | "draft-dflash" | "draft" | "draft-simple")), None) => {
                bail!("--spec {k} needs a drafter: --draft PATH (also -md)")
            }
            (Some("ngram" | "ngram-simple"), None) => SpecKind::Ngram,
            (Some(k @ ("ngram" | "ngram-simple")), Some(_)) => {
                bail!("--spec {k} uses no draft model: drop --draft")
            }
            (Some(other), _) => {
                bail!("--spec {other:?}: expected dflash, draft, ngram or none (or llama.cpp's draft-dflash, draft-simple, ngram-simple)")
            }
        };
        self.verify_mode()?;
        self.spec_tree_budget()?;
        if kind != SpecKind::None && self.draft_n_max == 0 {
            bail!("--spec-draft-n-max must be at least 1");
        }
        Ok(kind)
    }
}

#[derive(Args, Debug, Clone)]
pub(super) struct SamplingArgs {
    /// Temperature (0: greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: i32,
    /// Top-p (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Random seed (default: random).
    #[arg(short = 's', long = "seed")]
    seed: Option<u64>,
    /// Repetition penalty (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Tokens the penalties look back over (-1: all).
    #[arg(
        long = "repeat-last-n",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    repeat_last_n: i32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Add BIAS to a token's logit, as llama.cpp spells it: TOKEN_ID+BIAS or TOKEN_ID-BIAS
    /// (`15043+1`, `15043-0.5`; `15043-inf` bans the token). Repeatable.
    #[arg(short = 'l', long = "logit-bias", allow_hyphen_values = true)]
    logit_bias: Vec<String>,
}

/// One `--logit-bias` value: `TOKEN_ID+BIAS` or `TOKEN_ID-BIAS` (llama.cpp's spelling).
pub(super) fn parse_logit_bias(s: &str) -> Result<(u32, f32)> {
    let bad = |why: &str| {
        anyhow::anyhow!("--logit-bias {s:?}: {why} (expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, e.g. 15043+1 or 15043-inf)")
    };
    let t = s.trim();
    let split = t
        .find(['+', '-'])
        .ok_or_else(|| bad("no + or - between the token id and the bias"))?;
    let (id, rest) = t.split_at(split);
    let id: u32 = id
        .trim()
        .parse()
        .map_err(|_| bad("the token id is not a non-negative integer"))?;
    let value: f32 = rest[1..]
        .trim()
        .parse()
        .map_err(|_| bad("the bias is not a number"))?;
    if rest[1..].trim().starts_with(['+', '-']) {
        return Err(bad("the bias has two signs"));
    }
    let bias = if rest.starts_with('-') { -value } else { value };
    if !(bias.is_finite() || bias == f32::NEG_INFINITY) {
        return Err(bad("the bias must be a finite number or -inf"));
    }
    Ok((id, bias))
}

impl SamplingArgs {
    /// The sampling parameters, checked.
    pub(super) fn params(&self) -> Result<SamplingParams> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let p = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            seed,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self
                .logit_bias
                .iter()
                .map(|b| parse_logit_bias(b))
                .collect::<Result<_>>()?,
        };
        p.validate().map_err(anyhow::Error::msg)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_logit_bias;

    #[test]
    fn logit_bias_spellings() {
        assert_eq!(parse_logit_bias("15043+1").unwrap(), (15043, 1.0));
        assert_eq!(parse_logit_bias("15043-0.5").unwrap(), (15043, -0.5));
        assert_eq!(
            parse_logit_bias("15043-inf").unwrap(),
            (15043, f32::NEG_INFINITY)
        );
        for bad in [
            "15043",
            "x+1",
            "15043+",
            "15043+inf",
            "15043+nan",
            "-1+2",
            "15043+-1",
            "",
        ] {
            let e = parse_logit_bias(bad).unwrap_err().to_string();
            assert!(e.contains("--logit-bias"), "{bad}: {e}");
        }
    }
}
