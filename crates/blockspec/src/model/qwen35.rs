//! Qwen3.5 / Qwen3.6 dense (`general.architecture = qwen35`; Qwen3.5-27B, Qwen3.6-27B): three of
//! every four layers Gated DeltaNet, the fourth gated full attention, SwiGLU feed-forward,
//! interleaved multi-section RoPE on part of each head. The graph is [`super::hybrid`]; the GGUF
//! stores V heads reordered so each value head j reads key head j mod n_k (tiled), and norms
//! with the checkpoint's +1 folded in (except the Gated DeltaNet's output norm).

use super::{hybrid, qwen3, Arch, Hparams};
use crate::format::gguf::{Gguf, GgufError};

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    let mut hp = Hparams::from_gguf(g, Arch::Qwen35, qwen3::VARIANT)?;
    hybrid::read_hparams(g, &mut hp, true)?;
    Ok(hp)
}
