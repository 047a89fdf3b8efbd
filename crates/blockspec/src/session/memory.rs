//! The memory plan: what loading will allocate on the device, computed before it does.

use super::load::{open_gguf, DraftConfig, LoadConfig};
use crate::format::gguf::Gguf;
use anyhow::{Context as _, Result};
use std::path::Path;

/// Device memory needed before anything is allocated: weights, KV cache, captured features,
/// the drafter's weights and cache. Compute buffers are only known once reserved (logged after).
pub struct MemoryPlan {
    weights: usize,
    kv: usize,
    features: usize,
    draft_weights: usize,
    draft_kv: usize,
}

impl MemoryPlan {
    /// The plan for `cfg`'s target (`gguf`, `hp`) at `n_ctx` tokens, with its drafter.
    pub fn new(
        cfg: &LoadConfig,
        gguf: &Gguf,
        hp: &crate::model::Hparams,
        n_ctx: usize,
    ) -> Result<MemoryPlan> {
        let kv_row = |t: ggml::Type, n: usize| t.row_bytes(n as u64).unwrap_or(0) as usize;
        // Caches hold whole KV_PAD spans of cells (see Engine::new).
        let pad =
            |n: usize| n.div_ceil(crate::runtime::engine::KV_PAD) * crate::runtime::engine::KV_PAD;
        // Attention layers hold KV cells; recurrent layers a fixed f32 state (and its
        // checkpoints, counted as they are made).
        let kv = hp.attention_layers().len()
            * pad(n_ctx)
            * (kv_row(cfg.type_k, hp.n_embd_kv()) + kv_row(cfg.type_v, hp.n_embd_kv()))
            + hp.ssm.map_or(0, |s| {
                hp.recurrent_layers().len() * 4 * (s.conv_state_len() + s.delta_state_len())
            });
        let file_bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0);
        let (mut features, mut draft_weights, mut draft_kv) = (0, 0, 0);
        match &cfg.draft {
            DraftConfig::DFlash {
                path: p,
                weight_type,
                ..
            } => {
                let c = crate::decode::draft::dflash::read_config(p, hp.n_layer)?;
                let rows = cfg.n_ubatch.min(n_ctx);
                features = c.target_layer_ids.len() * hp.n_embd * rows * 4;
                let cells = pad(n_ctx + c.block_size + 1);
                let row = kv_row(ggml::Type::F16, c.head_dim * c.n_head_kv);
                draft_kv = c.n_layer * 2 * cells * row;
                draft_weights = if p.is_dir() {
                    std::fs::read_dir(p)
                        .map(|d| d.flatten().map(|e| file_bytes(&e.path())).sum())
                        .unwrap_or(0)
                } else {
                    file_bytes(p)
                };
                // Requantized 16-bit matrices shrink to the new type's bytes per weight.
                if let Some(t) = weight_type {
                    let per_32 = t.row_bytes(32).unwrap_or(64) as f64;
                    draft_weights = (draft_weights as f64 * per_32 / 64.0) as usize;
                }
            }
            DraftConfig::DraftModel { path: p, .. } => {
                let dg = open_gguf(p).context("--draft")?;
                let dhp = crate::model::hparams_for(&dg)?;
                draft_weights = dg.tensor_data_bytes() as usize;
                draft_kv = dhp.attention_layers().len()
                    * pad(n_ctx)
                    * 2
                    * kv_row(ggml::Type::F16, dhp.n_embd_kv());
            }
            DraftConfig::None | DraftConfig::Ngram { .. } => {}
        }
        Ok(MemoryPlan {
            weights: gguf.tensor_data_bytes() as usize,
            kv,
            features,
            draft_weights,
            draft_kv,
        })
    }

    /// Bytes in all.
    pub fn total(&self) -> usize {
        self.weights + self.kv + self.features + self.draft_weights + self.draft_kv
    }

    /// Bytes allocated beside the target's weights (which a CPU maps from the file).
    pub fn allocated(&self) -> usize {
        self.total() - self.weights
    }

    /// One line: each part and the total, in MiB.
    pub fn describe(&self) -> String {
        let mib = |b: usize| b as f64 / 1048576.0;
        format!(
            "weights {:.1} MiB + KV cache {:.1} + features {:.1} + drafter {:.1} + draft cache {:.1} = {:.1} MiB",
            mib(self.weights),
            mib(self.kv),
            mib(self.features),
            mib(self.draft_weights),
            mib(self.draft_kv),
            mib(self.total())
        )
    }
}
