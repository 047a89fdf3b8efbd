//! DFlash block-diffusion drafter (z-lab DFlash 1).
//!
//! A small Qwen3-style decoder without embeddings or head of its own: it reads the TARGET's token
//! embeddings and lm_head. Context: the target's hidden states at `target_layer_ids` for every
//! committed token, concatenated -> `fc` -> `hidden_norm`; in every draft layer that fused context
//! goes through the layer's k_proj / k_norm / RoPE and v_proj and is kept in a draft KV cache (one
//! cell per position, written once per committed token). A step drafts a whole block
//! `[last token, MASK x (B-1)]` at positions `start..start+B` in one forward: the block attends
//! without a causal mask to the cached context and to itself; slot k >= 1 predicts position
//! start+k.
//!
//! One graph per step does both the context injection of the newly committed tokens and the
//! block, with fixed shapes (padded), so it is built once per KV bucket and reused.

use super::{Drafter, Features};
use crate::format::gguf::Gguf;
use crate::model::weights::{
    Loader, Requantized, SourceTensor, TensorSource, WeightBytes, WeightStore,
};
use crate::model::Model;
use crate::runtime::capture::CapturedRows;
use crate::runtime::engine::KV_PAD;
use crate::runtime::graph_cache::{BuiltGraph, GraphCache};
use crate::runtime::profile;
use anyhow::{bail, Context as _, Result};
use ggml::{Backend, Buffer, Context, Graph, RopeParams, Sched, Tensor, Type, WeightUse};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which checkpoint spelling a drafter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftFormat {
    /// z-lab HF directory: config.json + safetensors.
    ZLab,
    /// llama.cpp GGUF, arch `dflash` (target layer ids stored +1).
    LlamaCpp,
    /// Luce GGUF, arch `qwen35-dflash-draft`.
    Luce,
    /// BeeLlama / buun GGUF, arch `dflash-draft` (ids without +1).
    BeeLlama,
}

#[derive(Clone, Debug)]
pub struct DFlashConfig {
    pub format: DraftFormat,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub block_size: usize,
    pub mask_token_id: u32,
    /// 0-based target layers whose outputs feed the drafter (HF `hidden_states[i+1]`).
    pub target_layer_ids: Vec<usize>,
}

// ---------------------------------------------------------------- loading: z-lab directory

fn cfg_usize(cfg: &serde_json::Value, key: &str, file: &Path) -> Result<usize> {
    cfg.get(key)
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .with_context(|| {
            format!(
                "{}: missing or non-integer config key {key:?}",
                file.display()
            )
        })
}

/// The default tap rule when a checkpoint does not list its layers.
pub fn default_target_layers(n_target_layers: usize, n: usize) -> Vec<usize> {
    if n <= 1 {
        return vec![n_target_layers / 2];
    }
    (0..n)
        .map(|k| {
            (1.0 + k as f64 * (n_target_layers as f64 - 4.0) / (n as f64 - 1.0)).round() as usize
        })
        .collect()
}

/// A z-lab checkpoint's safetensors, offered under llama.cpp's `dflash` GGUF tensor names.
struct SafetensorsDir {
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
    fn open(dir: &Path) -> Result<SafetensorsDir> {
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

fn zlab_config(dir: &Path, target_n_layer: usize) -> Result<DFlashConfig> {
    let file = dir.join("config.json");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let cfg: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", file.display()))?;
    let archs = cfg
        .get("architectures")
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default();
    let arch = archs.first().and_then(|a| a.as_str()).unwrap_or("");
    if arch.contains("DFlash2") {
        bail!("{}: DFlash 2 checkpoints (grouped dynamic conv + candidate selector) are not supported yet", file.display());
    }
    if arch != "DFlashDraftModel" {
        bail!(
            "{}: architectures is {arch:?}, expected \"DFlashDraftModel\"",
            file.display()
        );
    }
    let dcfg = cfg
        .get("dflash_config")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let block_size = cfg
        .get("block_size")
        .or_else(|| dcfg.get("block_size"))
        .and_then(|v| v.as_u64())
        .with_context(|| {
            format!(
                "{}: missing block_size (top level or in dflash_config)",
                file.display()
            )
        })? as usize;
    let mask_token_id = dcfg
        .get("mask_token_id")
        .or_else(|| cfg.get("mask_token_id"))
        .and_then(|v| v.as_u64())
        .with_context(|| format!("{}: missing dflash_config.mask_token_id", file.display()))?
        as u32;
    let n_embd = cfg_usize(&cfg, "hidden_size", &file)?;
    let n_head = cfg_usize(&cfg, "num_attention_heads", &file)?;
    let target_layer_ids = match dcfg
        .get("target_layer_ids")
        .or_else(|| cfg.get("target_layer_ids"))
    {
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .with_context(|| {
                format!(
                    "{}: target_layer_ids must be a list of integers",
                    file.display()
                )
            })?,
        None => {
            let n_target = cfg
                .get("num_target_layers")
                .and_then(|v| v.as_u64())
                .map_or(target_n_layer, |v| v as usize);
            let n = cfg
                .get("num_target_features")
                .and_then(|v| v.as_u64())
                .unwrap_or(5) as usize;
            default_target_layers(n_target, n)
        }
    };
    if cfg
        .get("layer_types")
        .and_then(|v| v.as_array())
        .is_some_and(|a| a.iter().any(|t| t.as_str() == Some("sliding_attention")))
    {
        bail!(
            "{}: sliding-window drafter layers are not supported yet",
            file.display()
        );
    }
    Ok(DFlashConfig {
        format: DraftFormat::ZLab,
        n_embd,
        n_layer: cfg_usize(&cfg, "num_hidden_layers", &file)?,
        n_head,
        n_head_kv: cfg
            .get("num_key_value_heads")
            .and_then(|v| v.as_u64())
            .map_or(n_head, |v| v as usize),
        head_dim: cfg
            .get("head_dim")
            .and_then(|v| v.as_u64())
            .map_or(n_embd / n_head.max(1), |v| v as usize),
        n_ff: cfg_usize(&cfg, "intermediate_size", &file)?,
        rms_eps: cfg
            .get("rms_norm_eps")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-6) as f32,
        rope_theta: cfg
            .get("rope_theta")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e6) as f32,
        block_size,
        mask_token_id,
        target_layer_ids,
    })
}

// ---------------------------------------------------------------- loading: GGUF spellings

/// A drafter GGUF offered under canonical names (Luce and BeeLlama rename a few tensors).
struct DraftGguf {
    g: Gguf,
    renames: &'static [(&'static str, &'static str)],
}

impl TensorSource for DraftGguf {
    fn describe(&self) -> String {
        self.g.describe()
    }
    fn find(&self, name: &str) -> Option<SourceTensor> {
        let theirs = self
            .renames
            .iter()
            .find(|(c, _)| *c == name)
            .map_or(name, |(_, t)| t);
        let mut t = self.g.find(theirs)?;
        t.name = name.to_string();
        Some(t)
    }
}

fn gguf_config(g: &Gguf) -> Result<(DFlashConfig, &'static [(&'static str, &'static str)])> {
    let arch = g.arch()?.to_string();
    let (format, renames, ids_plus_one): (_, &'static [(&str, &str)], bool) = match arch.as_str() {
        "dflash" => (DraftFormat::LlamaCpp, &[], true),
        "qwen35-dflash-draft" => (
            DraftFormat::Luce,
            &[("fc.weight", "dflash.fc.weight"), ("enc.output_norm.weight", "dflash.hidden_norm.weight")],
            false,
        ),
        "dflash-draft" => (
            DraftFormat::BeeLlama,
            &[("fc.weight", "dflash_fc.weight"), ("enc.output_norm.weight", "dflash_hidden_norm.weight")],
            false,
        ),
        other => bail!(
            "{}: architecture {other:?} is not a DFlash drafter (expected dflash, qwen35-dflash-draft or dflash-draft)",
            g.path().display()
        ),
    };
    if g.get(&format!("{arch}.conv_kernel_size")).is_some()
        || g.get(&format!("{arch}.selector_rank")).is_some()
    {
        bail!(
            "{}: DFlash 2 drafters (conv + candidate selector) are not supported yet",
            g.path().display()
        );
    }
    let k = |s: &str| format!("{arch}.{s}");
    let n_embd = g.size(&k("embedding_length"))?;
    let n_head = g.size(&k("attention.head_count"))?;
    let raw_ids = match g.int_array(&k("target_layers"))? {
        Some(v) => v,
        None => match g.int_array(&k("target_layer_ids"))? {
            Some(v) => v,
            None => match g.get(&k("n_target_layers")) {
                Some(_) => {
                    let n_target = g.size(&k("n_target_layers"))?;
                    default_target_layers(n_target, 5)
                        .into_iter()
                        .map(|x| x as i64)
                        .collect()
                }
                None => bail!("{}: missing {arch}.target_layers", g.path().display()),
            },
        },
    };
    let target_layer_ids = raw_ids
        .iter()
        .map(|&i| {
            let i = if ids_plus_one { i - 1 } else { i };
            usize::try_from(i)
                .map_err(|_| anyhow::anyhow!("{}: negative target layer id", g.path().display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mask = match g.get("tokenizer.ggml.mask_token_id") {
        Some(_) => g.int("tokenizer.ggml.mask_token_id")?,
        None => g.int(&k("mask_token_id"))?,
    };
    let cfg = DFlashConfig {
        format,
        n_embd,
        n_layer: g.size(&k("block_count"))?,
        n_head,
        n_head_kv: match g.get(&k("attention.head_count_kv")) {
            Some(_) => g.size(&k("attention.head_count_kv"))?,
            None => n_head,
        },
        head_dim: match g.get(&k("attention.key_length")) {
            Some(_) => g.size(&k("attention.key_length"))?,
            None => n_embd / n_head,
        },
        n_ff: g.size(&k("feed_forward_length"))?,
        rms_eps: g.float_or(&k("attention.layer_norm_rms_epsilon"), 1e-6)? as f32,
        rope_theta: g.float_or(&k("rope.freq_base"), 1e6)? as f32,
        block_size: g.int_or(&k("block_size"), 16)? as usize,
        mask_token_id: u32::try_from(mask)
            .map_err(|_| anyhow::anyhow!("mask token id {mask} is negative"))?,
        target_layer_ids,
    };
    Ok((cfg, renames))
}

// ---------------------------------------------------------------- weights

struct DraftLayer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    ffn_norm: Tensor,
    ffn_gate: Tensor,
    ffn_up: Tensor,
    ffn_down: Tensor,
}

struct DraftWeights {
    fc: Tensor,
    hidden_norm: Tensor,
    output_norm: Tensor,
    layers: Vec<DraftLayer>,
    store: Arc<WeightStore>,
}

fn load_weights(
    src: &dyn TensorSource,
    c: &DFlashConfig,
    backend: &Backend,
) -> Result<DraftWeights> {
    let mut l = Loader::new(src, backend, true);
    let (e, hd) = (c.n_embd, c.head_dim);
    let (eq, ekv) = (hd * c.n_head, hd * c.n_head_kv);
    let fc = l.require(
        "fc.weight",
        &[e * c.target_layer_ids.len(), e],
        WeightUse::MulMat,
    )?;
    let hn = l.require("enc.output_norm.weight", &[e], WeightUse::Other)?;
    let on = l.require("output_norm.weight", &[e], WeightUse::Other)?;
    let mut idx = Vec::new();
    for il in 0..c.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        idx.push([
            l.require(&n("attn_norm"), &[e], WeightUse::Other)?,
            l.require(&n("attn_q"), &[e, eq], WeightUse::MulMat)?,
            l.require(&n("attn_k"), &[e, ekv], WeightUse::MulMat)?,
            l.require(&n("attn_v"), &[e, ekv], WeightUse::MulMat)?,
            l.require(&n("attn_output"), &[eq, e], WeightUse::MulMat)?,
            l.require(&n("attn_q_norm"), &[hd], WeightUse::Other)?,
            l.require(&n("attn_k_norm"), &[hd], WeightUse::Other)?,
            l.require(&n("ffn_norm"), &[e], WeightUse::Other)?,
            l.require(&n("ffn_gate"), &[e, c.n_ff], WeightUse::MulMat)?,
            l.require(&n("ffn_up"), &[e, c.n_ff], WeightUse::MulMat)?,
            l.require(&n("ffn_down"), &[c.n_ff, e], WeightUse::MulMat)?,
        ]);
    }
    let (t, store) = l.load(false)?;
    Ok(DraftWeights {
        fc: t[fc],
        hidden_norm: t[hn],
        output_norm: t[on],
        layers: idx
            .into_iter()
            .map(|i| DraftLayer {
                attn_norm: t[i[0]],
                wq: t[i[1]],
                wk: t[i[2]],
                wv: t[i[3]],
                wo: t[i[4]],
                q_norm: t[i[5]],
                k_norm: t[i[6]],
                ffn_norm: t[i[7]],
                ffn_gate: t[i[8]],
                ffn_up: t[i[9]],
                ffn_down: t[i[10]],
            })
            .collect(),
        store,
    })
}

/// Read a drafter's configuration (z-lab directory or GGUF) without loading weights.
pub fn read_config(path: &Path, target_n_layer: usize) -> Result<DFlashConfig> {
    if path.is_dir() {
        zlab_config(path, target_n_layer)
    } else {
        let g = Gguf::open(path)?;
        Ok(gguf_config(&g)?.0)
    }
}

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
        let (cfg, renames) = gguf_config(&g)?;
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
    let mut kv = crate::dev::synth::dflash_kv(&crate::dev::synth::DflashMeta {
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

/// Check a drafter against its target; the message says which quantity disagrees.
pub fn validate(c: &DFlashConfig, target: &Model, path: &Path) -> Result<()> {
    let hp = &target.hp;
    let p = path.display();
    if c.n_embd != hp.n_embd {
        bail!("drafter {p}: hidden size {} does not match the target's {} (a drafter for another model?)", c.n_embd, hp.n_embd);
    }
    if let Some(&bad) = c.target_layer_ids.iter().find(|&&l| l >= hp.n_layer) {
        bail!(
            "drafter {p}: target layer {bad} out of range: the target has {} layers",
            hp.n_layer
        );
    }
    if c.target_layer_ids.is_empty() {
        bail!("drafter {p}: no target layers");
    }
    if c.mask_token_id as usize >= hp.n_vocab {
        bail!(
            "drafter {p}: mask token id {} outside the target's vocabulary of {}",
            c.mask_token_id,
            hp.n_vocab
        );
    }
    if c.block_size < 2 || c.block_size > 64 {
        bail!("drafter {p}: block size {} (expected 2..=64)", c.block_size);
    }
    if (c.rope_theta - hp.rope.freq_base).abs() > 1e-3 * hp.rope.freq_base.abs() {
        tracing::warn!(
            "drafter {p}: rope theta {} differs from the target's {} (a mis-converted drafter loses acceptance)",
            c.rope_theta,
            hp.rope.freq_base
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- the drafter

/// Node budget of a drafter graph (and of its scheduler, which copies graphs into buffers of
/// this size): ~50 nodes per layer plus inputs, with ample slack.
fn draft_graph_nodes(n_layer: usize) -> usize {
    (n_layer * 128 + 256).max(2048)
}

/// Rows of newly committed context appended per graph when catching up (after a prompt).
const APPEND_ROWS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Shape {
    /// Context rows injected (padded); the block is present iff `block`.
    ctx_rows: usize,
    block: bool,
    n_kv: usize,
    /// Block slots whose drafts are read out (the lm_head runs on these rows only).
    n_out: usize,
    /// The context features are gathered from the target's capture buffer on the device
    /// (`Features::Device`) instead of uploaded from the host.
    device_feats: bool,
}

struct StepGraph {
    ctx: Context,
    graph: Graph,
    /// Host mode: the context feature rows, uploaded.
    feats: Option<Tensor>,
    /// Device mode: which rows of the target's capture buffer are the context.
    feat_rows: Option<Tensor>,
    ctx_pos: Tensor,
    ctx_rows: Tensor,
    blk_tokens: Option<Tensor>,
    blk_pos: Option<Tensor>,
    blk_rows: Option<Tensor>,
    mask: Option<Tensor>,
    argmax: Option<Tensor>,
}

impl BuiltGraph for StepGraph {
    fn graph(&self) -> Graph {
        self.graph
    }
    fn host_bytes(&self) -> usize {
        self.ctx.mem_size()
    }
}

struct DraftCacheStore {
    _ctx: Context,
    _buffer: Buffer,
}

/// A DFlash drafter's configuration and weights, loaded once: every session (a server's slots)
/// makes its own drafter (draft cache, graphs) over the same weights.
pub struct DFlashWeights {
    pub cfg: DFlashConfig,
    t: DraftWeights,
}

impl DFlashWeights {
    /// Load from a z-lab directory or a DFlash GGUF, checked against `target`; `weight_type`
    /// requantizes 16-bit matrices (q8_0, q4_0).
    pub fn load(
        path: &Path,
        target: &Model,
        backend: &Backend,
        weight_type: Option<Type>,
    ) -> Result<Arc<DFlashWeights>> {
        if let Some(t) = weight_type {
            if t.quantize(&[0.0; 32], 1, 32).is_none() {
                bail!("draft weight type {t}: expected a quantized type such as q8_0 or q4_0");
            }
        }
        let load = |src: &dyn TensorSource, cfg: &DFlashConfig| match weight_type {
            Some(ty) => load_weights(&Requantized { inner: src, ty }, cfg, backend),
            None => load_weights(src, cfg, backend),
        };
        let (cfg, weights) = if path.is_dir() {
            let cfg = zlab_config(path, target.hp.n_layer)?;
            validate(&cfg, target, path)?;
            let src = SafetensorsDir::open(path)?;
            let w = load(&src, &cfg)?;
            (cfg, w)
        } else {
            if !path.exists() {
                bail!("drafter not found: {}", path.display());
            }
            let g = Gguf::open(path)?;
            let (cfg, renames) = gguf_config(&g)?;
            validate(&cfg, target, path)?;
            let src = DraftGguf { g, renames };
            let w = load(&src, &cfg)?;
            (cfg, w)
        };
        Ok(Arc::new(DFlashWeights { cfg, t: weights }))
    }
}

pub struct DFlashDrafter {
    pub cfg: DFlashConfig,
    w: Arc<DFlashWeights>,
    target: Arc<Model>,
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    cache_owner: Arc<DraftCacheStore>,
    /// Cells: one per position up to the target context, the block's tail, and a trash row
    /// (the last) that padded rows write to.
    n_cells: usize,
    /// Attend to at most this many context cells before the block (0: all).
    window: usize,
    graphs: GraphCache<Shape, StepGraph>,
    /// Whether the last draft ran a cold graph (see Engine::last_decode_was_cold).
    last_cold: bool,
    /// Positions whose context K/V are in the cache.
    n_done: usize,
    /// Features of positions n_done.. not yet injected, `n_feat` floats each.
    pending: Vec<f32>,
    /// Features of the positions after `pending`, still in the target's capture buffer: the
    /// last step's commit. The next draft reads them there in its own graph; anything else that
    /// happens first copies them to `pending` (see `materialize`).
    device: Option<CapturedRows>,
    /// The capture buffer that device-mode graphs were built to read.
    capture_src: Option<CapturedRows>,
    /// The head scores token ids 0..head_rows only (see `set_draft_vocab`).
    head_rows: usize,
    backend: Arc<Backend>,
}

impl DFlashDrafter {
    /// Load a drafter (directory or GGUF) for `target`, with a draft cache for `n_ctx` positions.
    /// `cache_type`: the draft KV cache's element type (f16 normally; f32 for reference checks).
    pub fn load(
        path: &Path,
        target: Arc<Model>,
        backend: Arc<Backend>,
        n_ctx: usize,
        window: usize,
        cache_type: Type,
    ) -> Result<DFlashDrafter> {
        Self::load_with(path, target, backend, n_ctx, window, cache_type, None)
    }

    /// Like [`load`](Self::load); `weight_type` quantizes the drafter's float matrices (f32,
    /// f16, bf16) to that type at load (`--draft-type q8_0` / `q4_0`).
    pub fn load_with(
        path: &Path,
        target: Arc<Model>,
        backend: Arc<Backend>,
        n_ctx: usize,
        window: usize,
        cache_type: Type,
        weight_type: Option<Type>,
    ) -> Result<DFlashDrafter> {
        let weights = DFlashWeights::load(path, &target, &backend, weight_type)?;
        DFlashDrafter::new(weights, target, backend, n_ctx, window, cache_type)
    }

    /// A drafter (its own draft cache and graphs) over weights loaded once: concurrent
    /// sessions of one server share them.
    pub fn new(
        weights: Arc<DFlashWeights>,
        target: Arc<Model>,
        backend: Arc<Backend>,
        n_ctx: usize,
        window: usize,
        cache_type: Type,
    ) -> Result<DFlashDrafter> {
        let cfg = weights.cfg.clone();
        if cache_type.row_bytes(cfg.head_dim as u64).is_none() {
            bail!(
                "draft cache type {cache_type}: head size {} is not a multiple of its block size",
                cfg.head_dim
            );
        }
        // Context, one block, the trash cell; rounded up to whole KV_PAD spans (see the target
        // engine: ggml-cuda's fast attention kernels need multiples of 256).
        let n_cells = (n_ctx + cfg.block_size + 1).div_ceil(KV_PAD) * KV_PAD;
        let ekv = (cfg.head_dim * cfg.n_head_kv) as i64;
        let mut ctx = Context::new(2 * cfg.n_layer, 0);
        let mut k = Vec::new();
        let mut v = Vec::new();
        for il in 0..cfg.n_layer {
            let kt = ctx.new_tensor(cache_type, &[ekv, n_cells as i64]);
            ctx.set_name(kt, &format!("draft_k_l{il}"));
            let vt = ctx.new_tensor(cache_type, &[ekv, n_cells as i64]);
            ctx.set_name(vt, &format!("draft_v_l{il}"));
            k.push(kt);
            v.push(vt);
        }
        let buffer = Buffer::alloc_ctx_tensors(&ctx, backend.default_buffer_type()).context(
            "out of memory allocating the draft KV cache (try a smaller -c or --draft-ctx)",
        )?;
        buffer.clear(0);
        let nodes = draft_graph_nodes(cfg.n_layer);
        let sched = Sched::new(backend.sched_backends(), nodes);
        // Append and block shapes, a few context-row counts, KV spans: a handful at a time.
        let graphs = GraphCache::new(sched, !backend.is_cpu(), 16, "drafter");
        let mut d = DFlashDrafter {
            cfg,
            w: weights,
            target,
            k,
            v,
            cache_owner: Arc::new(DraftCacheStore {
                _ctx: ctx,
                _buffer: buffer,
            }),
            n_cells,
            window,
            graphs,
            last_cold: false,
            n_done: 0,
            pending: Vec::new(),
            device: None,
            capture_src: None,
            head_rows: 0,
            backend,
        };
        d.head_rows = d.target.hp.n_vocab;
        // Reserve compute memory for the largest graphs once, so it is never reallocated later.
        let b = d.cfg.block_size;
        for s in [
            Shape {
                ctx_rows: APPEND_ROWS,
                block: false,
                n_kv: 0,
                n_out: 0,
                device_feats: false,
            },
            Shape {
                ctx_rows: b,
                block: true,
                n_kv: d.n_cells,
                n_out: b - 1,
                device_feats: false,
            },
        ] {
            let g = d.build(s);
            if !d.graphs.reserve(g.graph) {
                bail!("drafter: could not reserve compute memory");
            }
        }
        Ok(d)
    }

    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Draft from the first `n` token ids only (`--draft-vocab`): the head multiplies by rows
    /// 0..n of the target's output matrix instead of all of them. BPE vocabularies number their
    /// tokens in merge order, so the low ids are the common ones; a rarer token is then never
    /// drafted (the target still decides every token: the output does not change), and the
    /// head, the largest matrix the drafter reads, costs n / n_vocab of what it did.
    pub fn set_draft_vocab(&mut self, n: usize) -> Result<()> {
        let nv = self.target.hp.n_vocab;
        if n == 0 || n > nv {
            bail!("--draft-vocab {n}: must be between 1 and the target's vocabulary size {nv}");
        }
        let out = self.target.weights.output;
        if n < nv
            && out
                .buffer_type()
                .is_some_and(|b| self.backend.is_repacked_buffer_type(b))
        {
            bail!(
                "--draft-vocab {n}: the target's output matrix is stored repacked for the CPU's \
                 fast kernels, and its rows cannot be taken apart (use --verify exact, which \
                 loads the target without repacking)"
            );
        }
        if n != self.head_rows {
            self.head_rows = n;
            self.graphs.retain(|s| !s.block);
        }
        Ok(())
    }

    /// Element types of the drafter's matrices (fc, then each layer's projections), as loaded.
    pub fn matrix_types(&self) -> Vec<Type> {
        let mut out = vec![self.w.t.fc.ty()];
        for l in &self.w.t.layers {
            for t in [l.wq, l.wk, l.wv, l.wo, l.ffn_gate, l.ffn_up, l.ffn_down] {
                out.push(t.ty());
            }
        }
        out
    }
    pub fn target_layers(&self) -> &[usize] {
        &self.cfg.target_layer_ids
    }
    fn n_feat(&self) -> usize {
        self.cfg.target_layer_ids.len() * self.cfg.n_embd
    }

    pub fn reset(&mut self) {
        self.n_done = 0;
        self.pending.clear();
        self.device = None;
    }

    /// Positions the drafter knows the context of (injected + pending).
    pub fn n_known(&self) -> usize {
        self.n_done
            + self.pending.len() / self.n_feat()
            + self.device.as_ref().map_or(0, |d| d.rows)
    }

    /// Give the target features of the next committed positions (token-major rows, host).
    pub fn push_features(&mut self, feats: &[f32]) -> Result<()> {
        debug_assert_eq!(feats.len() % self.n_feat(), 0);
        self.materialize()?;
        self.pending.extend_from_slice(feats);
        Ok(())
    }

    /// Give the target features of the next committed positions, left in the target's capture
    /// buffer (rows 0..). They must be drafted from, or [`materialize`](Self::materialize)d,
    /// before the target evaluates again.
    pub fn push_device_features(&mut self, rows: CapturedRows) -> Result<()> {
        self.materialize()?;
        if rows.tensor.ne()[0] as usize != self.n_feat() {
            bail!(
                "drafter: captured feature rows of {} values, expected {}",
                rows.tensor.ne()[0],
                self.n_feat()
            );
        }
        if rows.rows > 0 {
            self.device = Some(rows);
        }
        Ok(())
    }

    /// Copy the features still in the target's capture buffer to the host queue. Errors if the
    /// target has overwritten them (the caller broke the protocol: drafts would be wrong).
    pub fn materialize(&mut self) -> Result<()> {
        if let Some(d) = self.device.take() {
            if !d.is_current() {
                bail!(
                    "drafter: the target evaluated again before the drafter read the features of its last {} committed positions",
                    d.rows
                );
            }
            let _p = profile::scope("draft.read_capture");
            d.read_into(&mut self.pending);
        }
        Ok(())
    }

    /// Forget every position from `n` on (a new prompt sharing a prefix).
    pub fn truncate(&mut self, n: usize) {
        let host = self.pending.len() / self.n_feat();
        if n < self.n_done {
            self.n_done = n;
            self.pending.clear();
            self.device = None;
        } else if n - self.n_done <= host {
            let keep = (n - self.n_done) * self.n_feat();
            self.pending.truncate(keep);
            self.device = None;
        } else if let Some(d) = &mut self.device {
            d.rows = d.rows.min(n - self.n_done - host);
        }
    }

    /// Make the pending context injectable by one block graph: at most a block's worth of rows,
    /// all on the host or all in the target's capture buffer.
    fn prepare_context(&mut self) -> Result<()> {
        if let Some(d) = &self.device {
            if self.pending.is_empty() && d.rows <= self.cfg.block_size && d.is_current() {
                return Ok(());
            }
            // Mixed with host rows, too many, or stale (materialize reports that).
            self.materialize()?;
        }
        self.catch_up()
    }

    /// Device-mode graphs read `rows.tensor`: forget those built for another capture buffer.
    fn use_capture_source(&mut self, rows: &CapturedRows) {
        if self.capture_src.as_ref().map(|c| c.tensor) != Some(rows.tensor) {
            self.graphs.retain(|s| !s.device_feats);
            self.capture_src = Some(rows.clone());
        }
    }

    /// Write K (flattened to `[ekv, n]`) and V rows into layer `il`'s draft cache at `rows`.
    fn store_kv(&self, g: &mut Context, gf: Graph, il: usize, k: Tensor, v: Tensor, rows: Tensor) {
        let st = g.set_rows(self.k[il], k, rows);
        g.build_forward_expand(gf, st);
        let st = g.set_rows(self.v[il], v, rows);
        g.build_forward_expand(gf, st);
    }

    fn build(&self, s: Shape) -> StepGraph {
        let c = &self.cfg;
        let hp = &self.target.hp;
        let nodes = draft_graph_nodes(c.n_layer);
        let mut g = Context::new(nodes * 2, nodes);
        g.keep(self.w.t.store.clone());
        g.keep(self.target.weights.owner());
        g.keep(self.cache_owner.clone());
        let gf = g.new_graph(nodes);
        let (hd, nh, nkv) = (c.head_dim as i64, c.n_head as i64, c.n_head_kv as i64);
        let ekv = hd * nkv;
        let rope = RopeParams {
            n_dims: c.head_dim as i32,
            mode: 2, // NeoX
            n_ctx_orig: hp.n_ctx_train as i32,
            freq_base: c.rope_theta,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
        };
        let nc = s.ctx_rows as i64;
        let (feats, host_feats, feat_rows) = if s.device_feats {
            let src = self
                .capture_src
                .as_ref()
                .expect("device-mode graphs are built after use_capture_source");
            g.keep(src.owner.clone());
            let ix = g.input(Type::I32, &[nc], "draft_feat_rows");
            (g.get_rows(src.tensor, ix), None, Some(ix))
        } else {
            let f = g.input(Type::F32, &[self.n_feat() as i64, nc], "draft_feats");
            (f, Some(f), None)
        };
        let ctx_pos = g.input(Type::I32, &[nc], "draft_ctx_pos");
        let ctx_rows = g.input(Type::I64, &[nc], "draft_ctx_rows");
        // Context injection: fc -> hidden_norm -> per layer k_proj/k_norm/RoPE and v_proj.
        let fused = g.mul_mat(self.w.t.fc, feats);
        let fused = g.rms_norm(fused, c.rms_eps);
        let fused = g.mul(fused, self.w.t.hidden_norm);
        for (il, l) in self.w.t.layers.iter().enumerate() {
            let kc = normed_heads(&mut g, l.wk, l.k_norm, fused, nkv, c, ctx_pos, &rope);
            let kc = g.reshape(kc, &[ekv, nc]);
            let vc = g.mul_mat(l.wv, fused);
            self.store_kv(&mut g, gf, il, kc, vc, ctx_rows);
        }
        let mut sg = StepGraph {
            ctx: Context::new(1, 0),
            graph: gf,
            feats: host_feats,
            feat_rows,
            ctx_pos,
            ctx_rows,
            blk_tokens: None,
            blk_pos: None,
            blk_rows: None,
            mask: None,
            argmax: None,
        };
        if s.block {
            let b = c.block_size as i64;
            let toks = g.input(Type::I32, &[b], "draft_blk_tokens");
            let pos = g.input(Type::I32, &[b], "draft_blk_pos");
            let rows = g.input(Type::I64, &[b], "draft_blk_rows");
            let mask = g.input(Type::F16, &[s.n_kv as i64, b, 1, 1], "draft_mask");
            let mut h = g.get_rows(self.target.weights.tok_embd, toks);
            let scale = 1.0 / (c.head_dim as f32).sqrt();
            for (il, l) in self.w.t.layers.iter().enumerate() {
                let x = g.rms_norm(h, c.rms_eps);
                let x = g.mul(x, l.attn_norm);
                let q = normed_heads(&mut g, l.wq, l.q_norm, x, nh, c, pos, &rope);
                let k = normed_heads(&mut g, l.wk, l.k_norm, x, nkv, c, pos, &rope);
                let k = g.reshape(k, &[ekv, b]);
                let v = g.mul_mat(l.wv, x);
                // The block's own K/V go to the cells after the context; they are overwritten by
                // the real context of those positions later, and masked until then.
                self.store_kv(&mut g, gf, il, k, v, rows);
                let row = self.k[il].nb()[1];
                let head = self.k[il]
                    .ty()
                    .row_bytes(c.head_dim as u64)
                    .expect("checked at load") as usize;
                let kv_k = g.view(
                    self.k[il],
                    &[hd, nkv, s.n_kv as i64, 1],
                    &[head, row, row * self.n_cells],
                    0,
                );
                let kv_v = g.view(
                    self.v[il],
                    &[hd, nkv, s.n_kv as i64, 1],
                    &[head, row, row * self.n_cells],
                    0,
                );
                let q4 = g.view(
                    q,
                    &[hd, nh, b, 1],
                    &[q.nb()[1], q.nb()[2], q.nb()[2] * b as usize],
                    0,
                );
                let qp = g.permute(q4, [0, 2, 1, 3]);
                let kp = g.permute(kv_k, [0, 2, 1, 3]);
                let vp = g.permute(kv_v, [0, 2, 1, 3]);
                let att = g.flash_attn_ext(qp, kp, vp, mask, scale);
                let ne = att.ne();
                let att = g.reshape(att, &[ne[0] * ne[1], ne[2] * ne[3]]);
                let o = g.mul_mat(l.wo, att);
                let h1 = g.add(o, h);
                let x = g.rms_norm(h1, c.rms_eps);
                let x = g.mul(x, l.ffn_norm);
                let up = g.mul_mat(l.ffn_up, x);
                let gate = g.mul_mat(l.ffn_gate, x);
                let act = g.swiglu_split(gate, up);
                let down = g.mul_mat(l.ffn_down, act);
                h = g.add(down, h1);
            }
            // Slots 1..B predict positions start+1..start+B.
            let n_out = s.n_out as i64;
            let tail = g.view(h, &[c.n_embd as i64, n_out], &[h.nb()[1]], h.nb()[1]);
            let x = g.rms_norm(tail, c.rms_eps);
            let x = g.mul(x, self.w.t.output_norm);
            let out = self.target.weights.output;
            let head = if self.head_rows < hp.n_vocab {
                // Rows 0..head_rows: a contiguous prefix of a plain (not repacked) matrix.
                g.view(
                    out,
                    &[out.ne()[0], self.head_rows as i64],
                    &[out.nb()[1]],
                    0,
                )
            } else {
                out
            };
            let logits = g.mul_mat(head, x);
            let am = g.argmax(logits);
            g.set_output(am);
            g.build_forward_expand(gf, am);
            sg.blk_tokens = Some(toks);
            sg.blk_pos = Some(pos);
            sg.blk_rows = Some(rows);
            sg.mask = Some(mask);
            sg.argmax = Some(am);
        }
        sg.ctx = g;
        sg
    }

    fn run(&mut self, s: Shape, fill: impl FnOnce(&StepGraph)) -> Result<()> {
        if !self.graphs.contains(&s) {
            let g = self.build(s);
            self.graphs.insert(s, g);
        }
        let g = self.graphs.prepare(s)?;
        {
            let _p = profile::scope("draft.inputs");
            fill(g);
        }
        let _p = profile::scope("draft.compute");
        self.last_cold = self.graphs.compute(s)?;
        Ok(())
    }

    /// `rows` pending host rows were injected.
    fn consume(&mut self, rows: usize) {
        let nf = self.n_feat();
        self.pending.drain(..rows * nf);
        self.n_done += rows;
    }

    /// Draft the B-1 tokens that follow `last`, the committed token at position `n_known()` that
    /// the target has not seen yet. Returns greedy drafts for positions n_known()+1...
    pub fn draft(&mut self, last: u32) -> Result<Vec<u32>> {
        self.draft_block(last, self.cfg.block_size)
    }

    /// Like [`draft`](Self::draft) with a block of `len` (2..=B) slots: `[last, MASK x (len-1)]`.
    /// The block's attention is not causal, so a shorter block drafts differently (the reference
    /// shortens the block near the token budget); the graph stays the same, the mask hides the
    /// slots past `len`. Returns `len - 1` drafts.
    pub fn draft_block(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        let b = self.cfg.block_size;
        let len = len.clamp(2, b);
        let nf = self.n_feat();
        self.prepare_context()?;
        // The context comes from the host queue or, after a verify step, straight from the
        // target's capture buffer (prepare_context left one of the two).
        let device = self.device.take();
        if let Some(d) = &device {
            self.use_capture_source(d);
        }
        let rows = match &device {
            Some(d) => d.rows,
            None => self.pending.len() / nf,
        };
        let start = self.n_done + rows;
        if start + b > self.n_cells - 1 {
            bail!("drafter: context full ({start} positions)");
        }
        let n_kv = ((start + b).div_ceil(KV_PAD) * KV_PAD).min(self.n_cells);
        // Context rows to inject with this block: one per token the last step committed. Graphs
        // come in power-of-two row counts, so a step that accepted little injects (and uploads)
        // little instead of a full block's worth of padding.
        let ctx_rows = rows.max(1).next_power_of_two().min(b);
        let s = Shape {
            ctx_rows,
            block: true,
            n_kv,
            n_out: len - 1,
            device_feats: device.is_some(),
        };
        let lo = if self.window > 0 {
            start.saturating_sub(self.window)
        } else {
            0
        };
        let mut block = vec![self.cfg.mask_token_id as i32; b];
        block[0] = last as i32;
        let bpos: Vec<i32> = (start..start + b).map(|p| p as i32).collect();
        let brows: Vec<i64> = (start..start + b).map(|p| p as i64).collect();
        let mut mask = vec![0xFC00u16; n_kv * b];
        for r in 0..b {
            for cell in mask[r * n_kv + lo..r * n_kv + start + len].iter_mut() {
                *cell = 0;
            }
        }
        let mut out = vec![0i32; len - 1];
        {
            // The closure fills the graph's inputs while `run` holds `self` mutably.
            let pending = std::mem::take(&mut self.pending);
            let (n_done, n_cells) = (self.n_done, self.n_cells);
            let res = self.run(s, |g| {
                fill_ctx(g, &pending, nf, rows, ctx_rows, n_done, n_cells);
                g.blk_tokens.expect("block").write_i32(&block);
                g.blk_pos.expect("block").write_i32(&bpos);
                g.blk_rows.expect("block").write_i64(&brows);
                g.mask.expect("block").write_f16_bits(&mask);
            });
            self.pending = pending;
            res?;
        }
        let _p = profile::scope("draft.read");
        let am = self
            .graphs
            .get(&s)
            .and_then(|g| g.argmax)
            .context("drafter: block graph missing after its run")?;
        let mut bytes = vec![0u8; (len - 1) * 4];
        am.read_bytes(&mut bytes, 0);
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        if device.is_some() {
            self.n_done += rows;
        } else {
            self.consume(rows);
        }
        Ok(out.into_iter().map(|t| t as u32).collect())
    }

    /// Inject a long backlog of committed context (a prompt, or many plain steps) with
    /// context-only passes, leaving at most one block's worth for the next draft step.
    fn catch_up(&mut self) -> Result<()> {
        let (b, nf) = (self.cfg.block_size, self.n_feat());
        while self.pending.len() / nf > b {
            let rows = (self.pending.len() / nf - b).min(APPEND_ROWS);
            let s = Shape {
                ctx_rows: APPEND_ROWS,
                block: false,
                n_kv: 0,
                n_out: 0,
                device_feats: false,
            };
            self.run_inject(s, rows, APPEND_ROWS)?;
            self.consume(rows);
        }
        Ok(())
    }

    fn run_inject(&mut self, s: Shape, rows: usize, cap: usize) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let (nf, n_done, n_cells) = (self.n_feat(), self.n_done, self.n_cells);
        let r = self.run(s, |g| fill_ctx(g, &pending, nf, rows, cap, n_done, n_cells));
        self.pending = pending;
        r
    }
}

/// Project `x` (`[n_embd, n]`) with `w` to `n_heads` heads, RMS-normalize each head with
/// `norm` and RoPE it at `pos`: the Q and K path. The context injection and the block share it,
/// so the cached context K and the block's own K are computed alike.
#[allow(clippy::too_many_arguments)]
fn normed_heads(
    g: &mut Context,
    w: Tensor,
    norm: Tensor,
    x: Tensor,
    n_heads: i64,
    c: &DFlashConfig,
    pos: Tensor,
    rope: &RopeParams,
) -> Tensor {
    let n = x.ne()[1];
    let t = g.mul_mat(w, x);
    let t = g.reshape(t, &[c.head_dim as i64, n_heads, n]);
    let t = g.rms_norm(t, c.rms_eps);
    let t = g.mul(t, norm);
    g.rope_ext(t, pos, None, rope)
}

/// Write the context-injection inputs: `rows` feature rows for positions n_done.. (the first of
/// `pending`, or in device mode the first of the capture buffer), padded to `cap` rows that
/// write to the trash cell.
fn fill_ctx(
    g: &StepGraph,
    pending: &[f32],
    nf: usize,
    rows: usize,
    cap: usize,
    n_done: usize,
    n_cells: usize,
) {
    if let Some(t) = g.feats {
        let mut feats = vec![0f32; nf * cap];
        feats[..rows * nf].copy_from_slice(&pending[..rows * nf]);
        t.write_f32(&feats);
    }
    if let Some(t) = g.feat_rows {
        // Padded rows gather row 0; they only ever reach the trash cell.
        let ix: Vec<i32> = (0..cap)
            .map(|i| if i < rows { i as i32 } else { 0 })
            .collect();
        t.write_i32(&ix);
    }
    let pos: Vec<i32> = (0..cap)
        .map(|i| (n_done + i.min(rows.saturating_sub(1))) as i32)
        .collect();
    g.ctx_pos.write_i32(&pos);
    let trash = (n_cells - 1) as i64;
    let r: Vec<i64> = (0..cap)
        .map(|i| if i < rows { (n_done + i) as i64 } else { trash })
        .collect();
    g.ctx_rows.write_i64(&r);
}

impl Drafter for DFlashDrafter {
    fn name(&self) -> &'static str {
        "dflash"
    }
    fn max_block(&self) -> usize {
        self.cfg.block_size
    }
    fn target_layers(&self) -> &[usize] {
        &self.cfg.target_layer_ids
    }
    fn cost(&self) -> super::DraftCost {
        super::DraftCost::PerStep
    }
    fn compute_bytes(&self) -> usize {
        self.graphs.buffer_bytes()
    }
    fn last_draft_was_cold(&self) -> bool {
        self.last_cold
    }
    fn begin(&mut self, _prompt: &[u32], features: &[f32]) -> Result<()> {
        self.reset();
        self.push_features(features)
    }
    fn resumes_prefix(&self) -> bool {
        true
    }
    fn begin_from(&mut self, prompt: &[u32], reuse: usize, features: &[f32]) -> Result<()> {
        // The positions it knows are the previous generation's (its prompt and every commit),
        // the same ones the target's cache holds: keep the shared prefix's draft KV.
        if reuse > self.n_known() {
            bail!(
                "cached prompt prefix of {reuse} positions, but the drafter knows {}",
                self.n_known()
            );
        }
        if reuse == 0 {
            return self.begin(prompt, features);
        }
        self.truncate(reuse);
        self.push_features(features)
    }
    fn sync(&mut self) -> Result<()> {
        self.prepare_context()
    }
    fn draft(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        if len < 2 {
            return Ok(Vec::new());
        }
        self.draft_block(last, len)
    }
    fn reads_device_features(&self) -> bool {
        true
    }
    fn release_capture(&mut self) -> Result<()> {
        self.materialize()
    }
    fn commit(&mut self, _tokens: &[u32], features: Features) -> Result<()> {
        match features {
            Features::Host(f) => self.push_features(f),
            Features::Device(rows) => self.push_device_features(rows),
        }
    }
}

/// Whether `path` holds a DFlash drafter (a z-lab directory, or a GGUF whose architecture is one
/// of the DFlash spellings) rather than an ordinary model usable as a classic draft model.
pub fn is_dflash(path: &Path) -> Result<bool> {
    if path.is_dir() {
        return Ok(true);
    }
    if !path.exists() {
        bail!("drafter not found: {}", path.display());
    }
    let g = Gguf::open(path)?;
    Ok(matches!(
        g.arch()?,
        "dflash" | "qwen35-dflash-draft" | "dflash-draft"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layers_follow_the_reference_rule() {
        // 36-layer target, 5 taps: round(1 + k * 32 / 4)
        assert_eq!(default_target_layers(36, 5), vec![1, 9, 17, 25, 33]);
        assert_eq!(default_target_layers(28, 1), vec![14]);
    }

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
