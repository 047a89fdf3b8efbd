//! The DFlash GGUF spellings: the metadata reader for llama.cpp's `dflash`, Luce's
//! `qwen35-dflash-draft` and BeeLlama's `dflash-draft` architectures (and the tensor names the
//! last two rename), and the writer of llama.cpp's `dflash` metadata (`convert-draft`, `synth`).

use super::config::{default_target_layers, DFlashConfig, DraftFormat};
use crate::format::gguf::{Gguf, Value};
use crate::model::weights::{SourceTensor, TensorSource};
use anyhow::{bail, Result};

/// Whether a GGUF architecture name is one of the DFlash drafter spellings.
pub fn is_dflash_arch(arch: &str) -> bool {
    matches!(arch, "dflash" | "qwen35-dflash-draft" | "dflash-draft")
}

/// A drafter GGUF offered under canonical names (Luce and BeeLlama rename a few tensors).
pub(super) struct DraftGguf {
    pub(super) g: Gguf,
    pub(super) renames: &'static [(&'static str, &'static str)],
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

/// Read a drafter GGUF's configuration; also returns the tensor renames of its spelling (for
/// [`DraftGguf`]).
pub(super) fn read_config(
    g: &Gguf,
) -> Result<(DFlashConfig, &'static [(&'static str, &'static str)])> {
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

/// Hyperparameters of a DFlash drafter as llama.cpp's `dflash` GGUF stores them.
pub struct DFlashMeta<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub n_layer: usize,
    pub n_ctx: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub block_size: usize,
    /// 0-based target layers (written +1, as llama.cpp's `dflash` arch stores them).
    pub target_layers: &'a [usize],
    pub mask_token_id: u32,
}

/// The metadata of a llama.cpp `dflash` GGUF (the keys its converter writes, tokenizer aside).
pub fn dflash_kv(m: &DFlashMeta) -> Vec<(String, Value)> {
    let a = "dflash";
    let u = |x: usize| Value::U32(x as u32);
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(a.into())),
        ("general.type".into(), Value::Str("model".into())),
        ("general.name".into(), Value::Str(m.name.into())),
    ];
    if let Some(d) = m.description {
        kv.push(("general.description".into(), Value::Str(d.into())));
    }
    kv.extend([
        (format!("{a}.block_count"), u(m.n_layer)),
        (format!("{a}.context_length"), u(m.n_ctx)),
        (format!("{a}.embedding_length"), u(m.n_embd)),
        (format!("{a}.feed_forward_length"), u(m.n_ff)),
        (format!("{a}.attention.head_count"), u(m.n_head)),
        (format!("{a}.attention.head_count_kv"), u(m.n_head_kv)),
        (format!("{a}.rope.freq_base"), Value::F32(m.rope_theta)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(m.rms_eps),
        ),
        (format!("{a}.attention.key_length"), u(m.head_dim)),
        (format!("{a}.attention.value_length"), u(m.head_dim)),
        (format!("{a}.block_size"), u(m.block_size)),
        (
            format!("{a}.target_layers"),
            Value::Array(
                m.target_layers
                    .iter()
                    .map(|&l| Value::I32(l as i32 + 1))
                    .collect(),
            ),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "tokenizer.ggml.mask_token_id".into(),
            Value::U32(m.mask_token_id),
        ),
    ]);
    kv
}
