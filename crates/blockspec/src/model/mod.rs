//! Target models: hyperparameters and weights read from GGUF, and the forward graph per
//! architecture (one file each; the shared decoder blocks are in `blocks`).

pub(crate) mod blocks;
pub mod llama;
pub mod progress;
pub mod qwen2;
pub mod qwen3;
pub mod weights;

pub use blocks::{ForwardGraph, GraphShape};
pub use weights::{LayerWeights, Weights};

use crate::format::gguf::{Gguf, GgufError};
use anyhow::{bail, Result};

/// The architectures we build graphs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
}

impl Arch {
    pub fn from_gguf_name(name: &str) -> Option<Arch> {
        match name {
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "llama" => Some(Arch::Llama),
            _ => None,
        }
    }
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }
}

/// Which architecture-specific pieces the shared decoder block uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Q/K/V projections have biases (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on Q and K before RoPE (Qwen3).
    pub qk_norm: bool,
    /// NeoX-style rotation (rotate halves) instead of interleaved pairs (Llama).
    pub rope_neox: bool,
}

/// Hyperparameters of a decoder-only transformer, as llama.cpp reads them.
#[derive(Clone, Debug)]
pub struct Hparams {
    pub arch: Arch,
    pub variant: Variant,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
}

#[derive(Clone, Copy, Debug)]
pub struct RopeConfig {
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub ext_factor: f32,
    pub attn_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub n_ctx_orig: usize,
}

impl Hparams {
    /// Read the common keys `{arch}.*` (llama.cpp's names and defaults).
    pub fn from_gguf(g: &Gguf, arch: Arch, variant: Variant) -> Result<Hparams, GgufError> {
        let a = arch.gguf_name();
        let k = |s: &str| format!("{a}.{s}");
        let n_embd = g.size(&k("embedding_length"))?;
        let n_head = g.size(&k("attention.head_count"))?;
        let n_head_kv = match g.get(&k("attention.head_count_kv")) {
            Some(_) => g.size(&k("attention.head_count_kv"))?,
            None => n_head,
        };
        let head_dim = match g.get(&k("attention.key_length")) {
            Some(_) => g.size(&k("attention.key_length"))?,
            None => n_embd / n_head,
        };
        let n_vocab = match g.str_array("tokenizer.ggml.tokens")? {
            Some(t) => t.len(),
            None => g.size(&k("vocab_size"))?,
        };
        let n_ctx_train = g.size(&k("context_length"))?;
        let n_rot = match g.get(&k("rope.dimension_count")) {
            Some(_) => g.size(&k("rope.dimension_count"))?,
            None => head_dim,
        };
        let scaling = match g.get(&k("rope.scaling.type")) {
            Some(v) => v.as_str().unwrap_or("none").to_string(),
            None => "none".to_string(),
        };
        let factor = g.float_or(&k("rope.scaling.factor"), 0.0)? as f32;
        let freq_scale = if factor > 0.0 && scaling != "none" {
            1.0 / factor
        } else {
            1.0
        };
        let n_ctx_orig = g.int_or(
            &k("rope.scaling.original_context_length"),
            n_ctx_train as i64,
        )? as usize;
        // llama.cpp: YaRN extrapolation mix only when the model asks for YaRN scaling.
        let ext_factor = if scaling == "yarn" { 1.0 } else { 0.0 };
        let hp = Hparams {
            arch,
            variant,
            n_vocab,
            n_embd,
            n_layer: g.size(&k("block_count"))?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: g.size(&k("feed_forward_length"))?,
            n_ctx_train,
            rms_eps: g.float_or(&k("attention.layer_norm_rms_epsilon"), 1e-6)? as f32,
            rope: RopeConfig {
                n_rot,
                freq_base: g.float_or(&k("rope.freq_base"), 10000.0)? as f32,
                freq_scale,
                ext_factor,
                attn_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                n_ctx_orig,
            },
        };
        if !hp.n_head.is_multiple_of(hp.n_head_kv) {
            return Err(GgufError::Invalid {
                path: g.path().to_path_buf(),
                what: format!(
                    "{} heads is not a multiple of {} KV heads",
                    hp.n_head, hp.n_head_kv
                ),
            });
        }
        if scaling != "none" && scaling != "linear" && scaling != "yarn" {
            return Err(GgufError::Invalid {
                path: g.path().to_path_buf(),
                what: format!("unsupported rope scaling type {scaling:?}"),
            });
        }
        Ok(hp)
    }

    pub fn n_embd_kv(&self) -> usize {
        self.head_dim * self.n_head_kv
    }
}

/// Read the hyperparameters of whatever supported architecture `g` holds.
pub fn hparams_for(g: &Gguf) -> Result<Hparams> {
    let name = g.arch()?;
    let Some(arch) = Arch::from_gguf_name(name) else {
        bail!(
            "{}: unsupported architecture {name:?} (supported: qwen2, qwen3, llama)",
            g.path().display()
        )
    };
    Ok(match arch {
        Arch::Qwen2 => qwen2::hparams(g)?,
        Arch::Qwen3 => qwen3::hparams(g)?,
        Arch::Llama => llama::hparams(g)?,
    })
}

/// A loaded target model: hyperparameters and weights on a backend.
pub struct Model {
    pub hp: Hparams,
    pub weights: Weights,
}

impl Model {
    pub fn load(g: &Gguf, backend: &ggml::Backend, progress: bool) -> Result<Model> {
        Model::load_with(g, backend, progress, true)
    }

    /// `repack`: see [`weights::Loader::new`]; false gives batch-invariant kernels, so that a
    /// multi-token verify computes each row exactly as a one-token decode step would.
    pub fn load_with(
        g: &Gguf,
        backend: &ggml::Backend,
        progress: bool,
        repack: bool,
    ) -> Result<Model> {
        let hp = hparams_for(g)?;
        let weights = weights::load_dense(g, backend, &hp, progress, repack)?;
        Ok(Model { hp, weights })
    }

    /// Build the forward graph for `shape` (see [`GraphShape`]).
    pub fn build_graph(
        &self,
        kv: &crate::runtime::kv_cache::KvCache,
        capture: Option<&crate::runtime::capture::CaptureBuffer>,
        shape: GraphShape,
    ) -> ForwardGraph {
        blocks::build(&self.hp, &self.weights, kv, capture, shape)
    }
}
