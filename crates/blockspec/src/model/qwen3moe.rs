//! Qwen3 MoE (`general.architecture = qwen3moe`; Qwen3-30B-A3B, Qwen3-Coder-30B-A3B): Qwen3's
//! attention (per-head Q/K norms, NeoX RoPE, no biases) with every feed-forward block made of
//! routed experts (softmax router, top-k, renormalised weights; no shared expert).

use super::{qwen3, Arch, Hparams};
use crate::format::gguf::{Gguf, GgufError};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    let mut hp = Hparams::from_gguf(g, Arch::Qwen3Moe, qwen3::VARIANT)?;
    hp.moe = Some(Hparams::read_moe(g, Arch::Qwen3Moe, true)?);
    Ok(hp)
}
