//! Qwen2 / Qwen2.5 (`general.architecture = qwen2`): a Llama-style decoder (RMSNorm, GQA, SwiGLU)
//! whose Q, K and V projections carry biases, with NeoX RoPE.

use super::{Arch, Hparams, Variant};
use crate::format::gguf::{Gguf, GgufError};

pub const VARIANT: Variant = Variant {
    qkv_bias: true,
    qk_norm: false,
    rope_neox: true,
};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    Hparams::from_gguf(g, Arch::Qwen2, VARIANT)
}
