//! A z-lab drafter directory's safetensors, offered to the weight loader under llama.cpp's
//! `dflash` GGUF tensor names.

use crate::model::weights::{SourceTensor, TensorSource, WeightBytes};
use anyhow::{bail, Context as _, Result};
use ggml::Type;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A z-lab checkpoint's safetensors, offered under llama.cpp's `dflash` GGUF tensor names.
pub(super) struct SafetensorsDir {
    dir: PathBuf,
    tensors: HashMap<String, SourceTensor>,
}

/// Map a z-lab (HF) tensor name to our canonical (llama.cpp dflash GGUF) name.
fn canonical_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    let fixed = match hf {
        "fc.weight" => Some("fc.weight"),
        "hidden_norm.weight" => Some("enc.output_norm.weight"),
        "norm.weight" => Some("output_norm.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("layers.")?;
    let (n, part) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let name = match part {
        "input_layernorm.weight" => "attn_norm",
        "post_attention_layernorm.weight" => "ffn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{n}.{name}.weight"))
}

impl SafetensorsDir {
    /// Index every tensor the drafter uses in the directory's `*.safetensors` files.
    pub(super) fn open(dir: &Path) -> Result<SafetensorsDir> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read drafter directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "{}: no *.safetensors files in the drafter directory",
                dir.display()
            );
        }
        let mut tensors = HashMap::new();
        for f in files {
            let bytes =
                std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: corrupt safetensors file: {e}", f.display()))?;
            for (name, view) in st.tensors() {
                // Extra tensors some drafts ship (embed_tokens, lm_head, d2t) are not used.
                let Some(canon) = canonical_name(&name) else {
                    continue;
                };
                let shape: Vec<i64> = view.shape().iter().rev().map(|&d| d as i64).collect();
                if shape.is_empty() || shape.len() > 4 {
                    bail!(
                        "{}: tensor {name} has {} dimensions",
                        f.display(),
                        shape.len()
                    );
                }
                let data = view.data();
                // 1-D tensors (norms) are used elementwise with f32 activations: store f32.
                let (ty, bytes) = match (view.dtype(), shape.len()) {
                    (safetensors::Dtype::F32, _) => (Type::F32, data.to_vec()),
                    (safetensors::Dtype::BF16, 1) => (
                        Type::F32,
                        widen(data, |b| half::bf16::from_bits(b).to_f32()),
                    ),
                    (safetensors::Dtype::F16, 1) => {
                        (Type::F32, widen(data, |b| half::f16::from_bits(b).to_f32()))
                    }
                    (safetensors::Dtype::BF16, _) => (Type::BF16, data.to_vec()),
                    (safetensors::Dtype::F16, _) => (Type::F16, data.to_vec()),
                    (d, _) => bail!(
                        "{}: tensor {name} has dtype {d:?} (expected f32, f16 or bf16)",
                        f.display()
                    ),
                };
                let mut ne = [1i64; 4];
                ne[..shape.len()].copy_from_slice(&shape);
                let t = SourceTensor {
                    name: canon.clone(),
                    ty,
                    ne,
                    n_dims: shape.len(),
                    bytes: WeightBytes::Owned(Arc::new(bytes)),
                };
                if t.nbytes() != t.data().len() {
                    bail!(
                        "{}: tensor {name}: {} bytes for shape {shape:?}",
                        f.display(),
                        t.data().len()
                    );
                }
                tensors.insert(canon, t);
            }
        }
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            tensors,
        })
    }
}

fn widen(data: &[u8], f: impl Fn(u16) -> f32) -> Vec<u8> {
    data.chunks_exact(2)
        .flat_map(|c| f(u16::from_le_bytes([c[0], c[1]])).to_le_bytes())
        .collect()
}

impl TensorSource for SafetensorsDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
    fn find(&self, name: &str) -> Option<SourceTensor> {
        self.tensors.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_canonical() {
        assert_eq!(
            canonical_name("hidden_norm.weight").as_deref(),
            Some("enc.output_norm.weight")
        );
        assert_eq!(
            canonical_name("layers.3.mlp.down_proj.weight").as_deref(),
            Some("blk.3.ffn_down.weight")
        );
        assert_eq!(
            canonical_name("model.layers.0.self_attn.k_norm.weight").as_deref(),
            Some("blk.0.attn_k_norm.weight")
        );
        assert_eq!(canonical_name("lm_head.weight"), None);
    }
}
