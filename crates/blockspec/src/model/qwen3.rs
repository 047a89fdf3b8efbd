//! Qwen3 dense (`general.architecture = qwen3`): no Q/K/V biases; a per-head RMSNorm on Q and K
//! (`attn_q_norm`, `attn_k_norm`, over head_dim) before NeoX RoPE; head_dim given explicitly
//! (`qwen3.attention.key_length`), so n_head * head_dim may differ from n_embd.

use super::{Arch, Hparams, Variant};
use crate::format::gguf::{Gguf, GgufError};

pub const VARIANT: Variant = Variant {
    qkv_bias: false,
    qk_norm: true,
    rope_neox: true,
};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    Hparams::from_gguf(g, Arch::Qwen3, VARIANT)
}
