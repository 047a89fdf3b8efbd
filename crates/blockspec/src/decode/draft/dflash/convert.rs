//! `blockspec convert-draft`: any drafter spelling blockspec reads, rewritten as a llama.cpp
//! `dflash` GGUF.

use super::config::{zlab_config, DFlashConfig};
use super::gguf::{self, dflash_kv, DFlashMeta, DraftGguf};
use super::safetensors::SafetensorsDir;
use crate::format::gguf::Gguf;
use crate::model::weights::{Requantized, SourceTensor, TensorSource};
use anyhow::{bail, Context as _, Result};
use ggml::Type;
use std::path::Path;

/// What `convert_draft` writes.
pub struct ConvertOptions {
    /// Matrix type: `None` keeps each matrix as stored; F32 / F16 / BF16 convert float matrices;
    /// a quantized type (q8_0, q4_0) quantizes them. Norms are always written as f32.
    pub ty: Option<Type>,
    /// Extra metadata, normally the target's `tokenizer.*` keys (llama.cpp needs them).
    pub extra: Vec<(String, crate::format::gguf::Value)>,
    /// `general.name`.
    pub name: String,
    /// Target layer count, for a z-lab config that lists neither its layers nor
    /// `num_target_layers`.
    pub target_n_layer: Option<usize>,
}

/// What `convert_draft` wrote.
pub struct ConvertReport {
    pub cfg: DFlashConfig,
    pub n_tensors: usize,
    pub bytes: u64,
}

fn to_f32(t: &SourceTensor) -> Option<Vec<f32>> {
    let d = t.data();
    Some(match t.ty {
        Type::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Type::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Type::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// The drafter tensors under canonical (llama.cpp `dflash`) names with their expected shapes.
fn expected_tensors(c: &DFlashConfig) -> Vec<(String, Vec<usize>)> {
    let (e, hd) = (c.n_embd, c.head_dim);
    let (eq, ekv) = (hd * c.n_head, hd * c.n_head_kv);
    let mut v = vec![
        (
            "fc.weight".to_string(),
            vec![e * c.target_layer_ids.len(), e],
        ),
        ("enc.output_norm.weight".to_string(), vec![e]),
    ];
    for il in 0..c.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        v.extend([
            (n("attn_norm"), vec![e]),
            (n("attn_q"), vec![e, eq]),
            (n("attn_k"), vec![e, ekv]),
            (n("attn_v"), vec![e, ekv]),
            (n("attn_output"), vec![eq, e]),
            (n("attn_q_norm"), vec![hd]),
            (n("attn_k_norm"), vec![hd]),
            (n("ffn_norm"), vec![e]),
            (n("ffn_gate"), vec![e, c.n_ff]),
            (n("ffn_up"), vec![e, c.n_ff]),
            (n("ffn_down"), vec![c.n_ff, e]),
        ]);
    }
    v.push(("output_norm.weight".to_string(), vec![e]));
    v
}

/// Convert a drafter (z-lab directory, or any DFlash GGUF spelling blockspec reads) into a
/// llama.cpp `dflash` GGUF: the tensor names, the `+1` target layer ids and the keys of
/// llama.cpp's own converter (`blockspec convert-draft`).
pub fn convert_draft(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    use crate::format::gguf_write::{write_gguf, TensorData};
    if let Some(t) = opts.ty {
        let ok = [Type::F32, Type::F16, Type::BF16].contains(&t)
            || t.quantize(&[0.0; 32], 1, 32).is_some();
        if !ok {
            bail!("type {t}: expected f32, f16, bf16 or a quantized type such as q8_0 or q4_0");
        }
    }
    let (cfg, n_ctx, src): (DFlashConfig, usize, Box<dyn TensorSource>) = if input.is_dir() {
        let file = input.join("config.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", file.display()))?;
        let dc = raw.get("dflash_config");
        let has_ids = raw.get("target_layer_ids").is_some()
            || dc.is_some_and(|d| d.get("target_layer_ids").is_some());
        let n_target = match (raw.get("num_target_layers").and_then(|v| v.as_u64()), opts.target_n_layer) {
            (Some(n), _) => n as usize,
            (None, Some(n)) => n,
            (None, None) if has_ids => 0,
            (None, None) => bail!(
                "{}: lists no target_layer_ids and no num_target_layers: give the target (--target) so the default taps can be computed",
                file.display()
            ),
        };
        let cfg = zlab_config(input, n_target)?;
        let n_ctx = raw
            .get("max_position_embeddings")
            .and_then(|v| v.as_u64())
            .unwrap_or(32768) as usize;
        (cfg, n_ctx, Box::new(SafetensorsDir::open(input)?))
    } else {
        if !input.exists() {
            bail!("drafter not found: {}", input.display());
        }
        let g = Gguf::open(input)?;
        let (cfg, renames) = gguf::read_config(&g)?;
        let arch = g.arch()?.to_string();
        let n_ctx = g.int_or(&format!("{arch}.context_length"), 32768)? as usize;
        (cfg, n_ctx, Box::new(DraftGguf { g, renames }))
    };
    let requant;
    let src: &dyn TensorSource = match opts.ty {
        Some(t) if t.is_quantized() => {
            requant = Requantized {
                inner: src.as_ref(),
                ty: t,
            };
            &requant
        }
        _ => src.as_ref(),
    };
    let mut tensors = Vec::new();
    for (name, shape) in expected_tensors(&cfg) {
        let t = src
            .find(&name)
            .with_context(|| format!("{}: missing tensor {name}", src.describe()))?;
        let got: Vec<usize> = t.ne[..t.n_dims].iter().map(|&d| d as usize).collect();
        if got != shape {
            bail!(
                "{}: tensor {name} has shape {got:?}, expected {shape:?}",
                src.describe()
            );
        }
        let want = if shape.len() == 1 {
            Some(Type::F32)
        } else {
            opts.ty.filter(|t| !t.is_quantized())
        };
        let (ty, data) = match want {
            Some(w) if w != t.ty => {
                let f = to_f32(&t).with_context(|| {
                    format!(
                        "{}: tensor {name} is {}; it cannot be converted to {w} (only float tensors can)",
                        src.describe(),
                        t.ty
                    )
                })?;
                let bytes: Vec<u8> = match w {
                    Type::F32 => f.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    Type::F16 => f
                        .iter()
                        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                        .collect(),
                    _ => f
                        .iter()
                        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                        .collect(),
                };
                (w, bytes)
            }
            _ => (t.ty, t.data().to_vec()),
        };
        if let Some(q) = opts.ty.filter(|t| t.is_quantized()) {
            if shape.len() == 2 && ty != q && (shape[0] as u64).is_multiple_of(q.block_size()) {
                bail!(
                    "{}: tensor {name} is {ty} and cannot be requantized to {q} (only float tensors can)",
                    src.describe()
                );
            }
        }
        tensors.push(TensorData {
            name,
            ne: shape.iter().map(|&d| d as u64).collect(),
            ty,
            data,
        });
    }
    let mut kv = dflash_kv(&DFlashMeta {
        name: &opts.name,
        description: None,
        n_layer: cfg.n_layer,
        n_ctx,
        n_embd: cfg.n_embd,
        n_ff: cfg.n_ff,
        n_head: cfg.n_head,
        n_head_kv: cfg.n_head_kv,
        head_dim: cfg.head_dim,
        rms_eps: cfg.rms_eps,
        rope_theta: cfg.rope_theta,
        block_size: cfg.block_size,
        target_layers: &cfg.target_layer_ids,
        mask_token_id: cfg.mask_token_id,
    });
    kv.extend(
        opts.extra
            .iter()
            .filter(|(k, _)| k != "tokenizer.ggml.mask_token_id")
            .cloned(),
    );
    let tmp = output.with_extension("gguf.tmp");
    {
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        write_gguf(&mut w, &kv, &tensors)
            .and_then(|_| std::io::Write::flush(&mut w))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    let bytes = std::fs::metadata(output)?.len();
    Ok(ConvertReport {
        cfg,
        n_tensors: tensors.len(),
        bytes,
    })
}
