//! Llama 2/3 (`general.architecture = llama`): the reference decoder (RMSNorm, GQA, SwiGLU), no
//! biases, RoPE on interleaved pairs ("normal" mode, not NeoX). Llama 3.1+ long-context
//! scaling comes as `rope_freqs.weight` (per-frequency divisors), read by the shared loader.

use super::{Arch, Hparams, Variant};
use crate::format::gguf::{Gguf, GgufError};

pub const VARIANT: Variant = Variant {
    qkv_bias: false,
    qk_norm: false,
    rope_neox: false,
};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    Hparams::from_gguf(g, Arch::Llama, VARIANT)
}
