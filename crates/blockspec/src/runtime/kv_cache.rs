//! The target's KV cache: one K and one V matrix per layer, preallocated for the whole context.
//!
//! Cell `i` holds position `i` of the single sequence (a slot's session), so truncating the cache
//! after a rejected draft is just lowering the used length: nothing is copied or cleared, the mask
//! hides cells past the used length.

use anyhow::{Context as _, Result};
use ggml::{Backend, Buffer, Context, Tensor, Type};
use std::any::Any;
use std::sync::Arc;

pub struct KvStore {
    _ctx: Context,
    buffer: Buffer,
}

pub struct KvCache {
    /// Per attention layer: K as [n_embd_kv, n_ctx] rows.
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Per model layer: its index in `k`/`v` (`None`: a recurrent layer, no cache).
    slot: Vec<Option<usize>>,
    pub n_ctx: usize,
    pub type_k: Type,
    pub type_v: Type,
    store: Arc<KvStore>,
}

impl KvCache {
    /// A cache for the attention layers `layers` (model layer indices).
    pub fn new(
        backend: &Backend,
        layers: &[usize],
        head_dim: usize,
        n_head_kv: usize,
        n_ctx: usize,
        type_k: Type,
        type_v: Type,
    ) -> Result<KvCache> {
        // Attention reads the cache per head, so a head must be a whole number of blocks.
        for (what, t) in [("--cache-type-k", type_k), ("--cache-type-v", type_v)] {
            if t.row_bytes(head_dim as u64).is_none() {
                anyhow::bail!(
                    "{what} {t}: the model's head size {head_dim} is not a multiple of the {t} block size {}",
                    t.block_size()
                );
            }
        }
        let n_embd_kv = head_dim * n_head_kv;
        let mut ctx = Context::new(2 * layers.len().max(1), 0);
        let mut k = Vec::with_capacity(layers.len());
        let mut v = Vec::with_capacity(layers.len());
        let mut slot = vec![None; layers.iter().max().map_or(0, |&l| l + 1)];
        for (i, &il) in layers.iter().enumerate() {
            slot[il] = Some(i);
            let kt = ctx.new_tensor(type_k, &[n_embd_kv as i64, n_ctx as i64]);
            ctx.set_name(&kt, &format!("cache_k_l{il}"));
            let vt = ctx.new_tensor(type_v, &[n_embd_kv as i64, n_ctx as i64]);
            ctx.set_name(&vt, &format!("cache_v_l{il}"));
            k.push(kt);
            v.push(vt);
        }
        let buffer = Buffer::alloc_ctx_tensors(&ctx, backend.default_buffer_type())
            .context("out of memory allocating the KV cache (try a smaller -c)")?;
        // Stale cells are always masked, but NaN garbage times a zero weight is still NaN.
        buffer.clear(0);
        Ok(KvCache {
            k,
            v,
            slot,
            n_ctx,
            type_k,
            type_v,
            store: Arc::new(KvStore { _ctx: ctx, buffer }),
        })
    }

    /// Layer `il`'s K and V cache. Panics for a layer without one (a recurrent layer).
    pub fn layer(&self, il: usize) -> crate::model::blocks::LayerCache<'_> {
        let i = self
            .slot
            .get(il)
            .copied()
            .flatten()
            .expect("an attention layer");
        crate::model::blocks::LayerCache {
            k: &self.k[i],
            v: &self.v[i],
            n_cells: self.n_ctx,
        }
    }

    pub fn bytes(&self) -> usize {
        self.store.buffer.size()
    }

    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }
}
