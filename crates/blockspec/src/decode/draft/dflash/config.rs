//! A DFlash drafter's hyperparameters, one [`DFlashConfig`] whatever the checkpoint's spelling:
//! the z-lab `config.json` is read here, the GGUF spellings in [`super::gguf`].

use super::gguf;
use crate::format::gguf::Gguf;
use crate::model::Model;
use anyhow::{bail, Context as _, Result};
use std::path::Path;

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

/// A drafter's hyperparameters and the target layers it reads.
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

/// Read a z-lab `config.json` (its `dflash_config` block or top-level keys).
pub(super) fn zlab_config(dir: &Path, target_n_layer: usize) -> Result<DFlashConfig> {
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

/// Read a drafter's configuration (z-lab directory or GGUF) without loading weights.
pub fn read_config(path: &Path, target_n_layer: usize) -> Result<DFlashConfig> {
    if path.is_dir() {
        zlab_config(path, target_n_layer)
    } else {
        let g = Gguf::open(path)?;
        Ok(gguf::read_config(&g)?.0)
    }
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
    Ok(gguf::is_dflash_arch(g.arch()?))
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
}
