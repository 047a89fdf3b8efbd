//! Llama 2/3 (`general.architecture = llama`): the reference decoder (RMSNorm, GQA, SwiGLU), no
//! biases, RoPE on interleaved pairs ("normal" mode, not NeoX).

use super::{Arch, Hparams, Variant};
use crate::gguf::{Gguf, GgufError};

pub const VARIANT: Variant = Variant { qkv_bias: false, qk_norm: false, rope_neox: false };

pub fn hparams(g: &Gguf) -> Result<Hparams, GgufError> {
    let hp = Hparams::from_gguf(g, Arch::Llama, VARIANT)?;
    if g.tensor("rope_freqs.weight").is_some() {
        return Err(GgufError::Invalid {
            path: g.path().to_path_buf(),
            what: "Llama 3.1 rope frequency factors (rope_freqs.weight) are not supported yet".into(),
        });
    }
    Ok(hp)
}
