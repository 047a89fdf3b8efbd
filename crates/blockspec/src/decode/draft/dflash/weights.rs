//! A DFlash drafter's weights, loaded once from a z-lab directory or a DFlash GGUF and shared by
//! every session's drafter.

use super::config::{validate, zlab_config, DFlashConfig};
use super::gguf::{self, DraftGguf};
use super::safetensors::SafetensorsDir;
use crate::format::gguf::Gguf;
use crate::model::weights::{Loader, Requantized, TensorSource, WeightStore};
use crate::model::{Ffn, LayerWeights, Model};
use anyhow::{bail, Result};
use ggml::{Backend, Tensor, Type, WeightUse};
use std::path::Path;
use std::sync::Arc;

/// The drafter's tensors on the backend: fc + hidden_norm (context), the layers (the target
/// models' layer layout, without biases, with Q/K norms) and the final norm.
pub(super) struct DraftWeights {
    pub(super) fc: Tensor,
    pub(super) hidden_norm: Tensor,
    pub(super) output_norm: Tensor,
    pub(super) layers: Vec<LayerWeights>,
    pub(super) store: Arc<WeightStore>,
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
        fc: t[fc].clone(),
        hidden_norm: t[hn].clone(),
        output_norm: t[on].clone(),
        layers: idx
            .into_iter()
            .map(|i| LayerWeights {
                attn_norm: t[i[0]].clone(),
                wq: t[i[1]].clone(),
                wk: t[i[2]].clone(),
                wv: t[i[3]].clone(),
                bq: None,
                bk: None,
                bv: None,
                wo: t[i[4]].clone(),
                q_norm: Some(t[i[5]].clone()),
                k_norm: Some(t[i[6]].clone()),
                ffn_norm: t[i[7]].clone(),
                ffn: Ffn::Dense {
                    gate: t[i[8]].clone(),
                    up: t[i[9]].clone(),
                    down: t[i[10]].clone(),
                },
            })
            .collect(),
        store,
    })
}

/// A DFlash drafter's configuration and weights, loaded once: every session (a server's slots)
/// makes its own drafter (draft cache, graphs) over the same weights.
pub struct DFlashWeights {
    pub cfg: DFlashConfig,
    pub(super) t: DraftWeights,
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
            let (cfg, renames) = gguf::read_config(&g)?;
            validate(&cfg, target, path)?;
            let src = DraftGguf { g, renames };
            let w = load(&src, &cfg)?;
            (cfg, w)
        };
        Ok(Arc::new(DFlashWeights { cfg, t: weights }))
    }
}
