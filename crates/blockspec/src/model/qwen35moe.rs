//! Qwen3.5 / Qwen3.6 MoE (`general.architecture = qwen35moe`; Qwen3.6-35B-A3B,
//! Qwen3.5-122B-A10B): the Qwen3.5 hybrid stack ([`super::qwen35`]) with routed experts and a
//! sigmoid-gated shared expert in every feed-forward block.

use super::{hybrid, qwen3, Arch, Hparams};
use crate::format::gguf::{Gguf, GgufError};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    let mut hp = Hparams::from_gguf(g, Arch::Qwen35Moe, qwen3::VARIANT)?;
    hybrid::read_hparams(g, &mut hp, true)?;
    hp.moe = Some(Hparams::read_moe(g, Arch::Qwen35Moe, true)?);
    Ok(hp)
}
