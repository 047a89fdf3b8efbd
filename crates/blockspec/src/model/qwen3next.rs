//! Qwen3-Next (`general.architecture = qwen3next`; Qwen3-Coder-Next): the hybrid stack of
//! [`super::hybrid`] with MoE feed-forward and a shared expert, like Qwen3.5 MoE, but: plain
//! NeoX RoPE (no sections), beta and alpha in one fused `ssm_ba` projection, and V heads in the
//! checkpoint's grouped order (value head j reads key head j / r).

use super::{hybrid, qwen3, Arch, Hparams};
use crate::format::gguf::{Gguf, GgufError};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    let mut hp = Hparams::from_gguf(g, Arch::Qwen3Next, qwen3::VARIANT)?;
    hybrid::read_hparams(g, &mut hp, false)?;
    hp.moe = Some(Hparams::read_moe(g, Arch::Qwen3Next, true)?);
    Ok(hp)
}
