//! Target models: hyperparameters and weights read from GGUF, and the forward graph per
//! architecture (one file each; the shared decoder blocks are in `blocks`).

pub(crate) mod blocks;
pub(crate) mod delta_net;
pub(crate) mod hybrid;
pub mod llama;
pub(crate) mod moe;
pub mod progress;
pub mod qwen2;
pub mod qwen3;
pub mod qwen35;
pub mod qwen35moe;
pub mod qwen3moe;
pub mod qwen3next;
pub mod tree_levels;
pub mod weights;

pub use blocks::{ForwardGraph, GraphShape};
pub use weights::{Ffn, LayerWeights, Layers, Weights};

use crate::format::gguf::{Gguf, GgufError};
use anyhow::{bail, Result};

/// The architectures we build graphs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
    /// Qwen3 with mixture-of-experts feed-forward layers (Qwen3-30B-A3B, Qwen3-Coder-30B-A3B).
    Qwen3Moe,
    /// Qwen3.5 / Qwen3.6 dense: Gated DeltaNet layers with every fourth layer gated attention.
    Qwen35,
    /// Qwen3.5 / Qwen3.6 with MoE feed-forward layers (Qwen3.6-35B-A3B, Qwen3.5-122B-A10B).
    Qwen35Moe,
    /// Qwen3-Next (Qwen3-Coder-Next): as Qwen3.5 MoE, with grouped V heads and fused beta/alpha.
    Qwen3Next,
}

/// Every architecture we load, with its GGUF name.
const ARCHES: [(Arch, &str); 7] = [
    (Arch::Qwen2, "qwen2"),
    (Arch::Qwen3, "qwen3"),
    (Arch::Llama, "llama"),
    (Arch::Qwen3Moe, "qwen3moe"),
    (Arch::Qwen35, "qwen35"),
    (Arch::Qwen35Moe, "qwen35moe"),
    (Arch::Qwen3Next, "qwen3next"),
];

impl Arch {
    pub fn from_gguf_name(name: &str) -> Option<Arch> {
        ARCHES.iter().find(|(_, n)| *n == name).map(|(a, _)| *a)
    }
    pub fn gguf_name(self) -> &'static str {
        ARCHES
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, n)| *n)
            .expect("every arch is listed")
    }
    /// The GGUF names of all supported architectures, for error messages.
    pub fn supported() -> String {
        ARCHES.map(|(_, n)| n).join(", ")
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
    /// Mixture-of-experts feed-forward layers, if the model has them.
    pub moe: Option<MoeParams>,
    /// Gated DeltaNet geometry, if some layers are recurrent.
    pub ssm: Option<SsmParams>,
    /// Per layer: whether it is a recurrent (Gated DeltaNet) layer rather than attention.
    /// Empty for models without recurrent layers.
    pub recurrent: Vec<bool>,
}

/// Routed experts and the optional shared expert (llama.cpp's `expert_*` keys).
#[derive(Clone, Copy, Debug)]
pub struct MoeParams {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Hidden size of one routed expert.
    pub n_ff_exp: usize,
    /// Hidden size of the shared expert (0: none).
    pub n_ff_shexp: usize,
    /// Renormalise the chosen experts' weights to sum to 1.
    pub norm_topk: bool,
}

/// Gated DeltaNet layer geometry (llama.cpp's `ssm.*` keys).
#[derive(Clone, Copy, Debug)]
pub struct SsmParams {
    /// Convolution kernel length (4): the state keeps the last `d_conv - 1` inputs.
    pub d_conv: usize,
    /// Key/value head size (`ssm.state_size`; the op needs dk == dv).
    pub head_dim: usize,
    /// Key heads (`ssm.group_count`).
    pub n_k_heads: usize,
    /// Value heads (`ssm.time_step_rank`).
    pub n_v_heads: usize,
}

impl SsmParams {
    /// Channels of the convolution: q and k (n_k_heads each) then v (n_v_heads).
    pub fn conv_channels(&self) -> usize {
        self.head_dim * (2 * self.n_k_heads + self.n_v_heads)
    }
    /// f32 values of one layer's convolution state.
    pub fn conv_state_len(&self) -> usize {
        (self.d_conv - 1) * self.conv_channels()
    }
    /// f32 values of one layer's delta-rule state (a head_dim x head_dim matrix per value head).
    pub fn delta_state_len(&self) -> usize {
        self.head_dim * self.head_dim * self.n_v_heads
    }
    /// Width of the value (and gate z) projection.
    pub fn d_inner(&self) -> usize {
        self.head_dim * self.n_v_heads
    }
}

#[derive(Clone, Copy, Debug)]
pub struct RopeConfig {
    pub n_rot: usize,
    /// Multi-section RoPE (Qwen3.5's interleaved M-RoPE): rotary pairs per section. Text
    /// positions are the same in the first three sections, so only the frequencies' order
    /// differs from NeoX RoPE.
    pub sections: Option<[i32; 4]>,
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
            // MoE-only models may carry no dense feed-forward size.
            n_ff: g.int_or(&k("feed_forward_length"), 0)? as usize,
            n_ctx_train,
            rms_eps: g.float_or(&k("attention.layer_norm_rms_epsilon"), 1e-6)? as f32,
            rope: RopeConfig {
                n_rot,
                sections: None,
                freq_base: g.float_or(&k("rope.freq_base"), 10000.0)? as f32,
                freq_scale,
                ext_factor,
                attn_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                n_ctx_orig,
            },
            moe: None,
            ssm: None,
            recurrent: Vec::new(),
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

    /// Whether layer `il` is recurrent (Gated DeltaNet) rather than attention.
    pub fn is_recurrent(&self, il: usize) -> bool {
        self.recurrent.get(il).copied().unwrap_or(false)
    }

    /// The layers that attend over a KV cache.
    pub fn attention_layers(&self) -> Vec<usize> {
        (0..self.n_layer)
            .filter(|&il| !self.is_recurrent(il))
            .collect()
    }

    /// The recurrent layers, in order.
    pub fn recurrent_layers(&self) -> Vec<usize> {
        (0..self.n_layer)
            .filter(|&il| self.is_recurrent(il))
            .collect()
    }

    /// Read the routed-expert keys `{arch}.expert_*`.
    pub(crate) fn read_moe(g: &Gguf, arch: Arch, norm_topk: bool) -> Result<MoeParams, GgufError> {
        let k = |s: &str| format!("{}.{s}", arch.gguf_name());
        let moe = MoeParams {
            n_expert: g.size(&k("expert_count"))?,
            n_expert_used: g.size(&k("expert_used_count"))?,
            n_ff_exp: g.size(&k("expert_feed_forward_length"))?,
            n_ff_shexp: g.int_or(&k("expert_shared_feed_forward_length"), 0)? as usize,
            norm_topk,
        };
        if moe.n_expert_used == 0 || moe.n_expert_used > moe.n_expert {
            return Err(GgufError::Invalid {
                path: g.path().to_path_buf(),
                what: format!(
                    "{} experts used per token out of {}",
                    moe.n_expert_used, moe.n_expert
                ),
            });
        }
        Ok(moe)
    }
}

/// Read the hyperparameters of whatever supported architecture `g` holds.
pub fn hparams_for(g: &Gguf) -> Result<Hparams> {
    let name = g.arch()?;
    let Some(arch) = Arch::from_gguf_name(name) else {
        bail!(
            "{}: unsupported architecture {name:?} (supported: {})",
            g.path().display(),
            Arch::supported()
        )
    };
    Ok(match arch {
        Arch::Qwen2 => qwen2::hparams(g)?,
        Arch::Qwen3 => qwen3::hparams(g)?,
        Arch::Llama => llama::hparams(g)?,
        Arch::Qwen3Moe => qwen3moe::hparams(g)?,
        Arch::Qwen35 => qwen35::hparams(g)?,
        Arch::Qwen35Moe => qwen35moe::hparams(g)?,
        Arch::Qwen3Next => qwen3next::hparams(g)?,
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
        let weights = if hp.ssm.is_some() {
            hybrid::load(g, backend, &hp, progress, repack)?
        } else {
            weights::load_dense(g, backend, &hp, progress, repack)?
        };
        Ok(Model { hp, weights })
    }

    /// Whether some layers keep a recurrent state (which cannot be cut back like KV cells).
    pub fn is_hybrid(&self) -> bool {
        matches!(self.weights.layers, Layers::Hybrid(_))
    }

    /// Build the forward graph for `shape` (see [`GraphShape`]). `state` is the recurrent
    /// state of a hybrid model (required for one).
    pub fn build_graph(
        &self,
        kv: &crate::runtime::kv_cache::KvCache,
        state: Option<&crate::runtime::recurrent_state::RecurrentState>,
        capture: Option<&crate::runtime::capture::CaptureBuffer>,
        shape: GraphShape,
    ) -> ForwardGraph {
        let g = match &self.weights.layers {
            Layers::Dense(layers) => {
                blocks::build(&self.hp, &self.weights, layers, kv, capture, shape)
            }
            Layers::Hybrid(layers) => {
                let state = state.expect("a hybrid model's graph needs its recurrent state");
                hybrid::build(&self.hp, &self.weights, layers, kv, state, capture, shape)
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let ops: Vec<String> = g
                .graph
                .op_counts()
                .iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect();
            tracing::debug!(
                "graph {shape:?}: {} nodes: {}",
                g.graph.n_nodes(),
                ops.join(", ")
            );
        }
        g
    }
}
