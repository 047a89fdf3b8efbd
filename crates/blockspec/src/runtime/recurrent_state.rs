//! The recurrent state of a hybrid target's Gated DeltaNet layers for one sequence: per layer,
//! the last `d_conv - 1` pre-convolution inputs and the delta-rule matrices, all f32 (lower
//! precision drifts and costs acceptance). It sits beside the KV cache of the attention layers.
//!
//! Unlike KV cells, this state cannot be cut back to an earlier position: a graph either writes
//! the state after its last token (prompt chunks, plain decoding) or keeps the state after every
//! token as outputs (a verify) and the engine commits the one after the last accepted token.

use crate::model::tree_levels::LevelSlot;
use crate::model::SsmParams;
use anyhow::{Context as _, Result};
use ggml::{Backend, Buffer, Context, Tensor, Type};
use std::any::Any;
use std::sync::Arc;

struct Store {
    _ctx: Context,
    buffer: Buffer,
}

pub struct RecurrentState {
    pub ssm: SsmParams,
    /// Per recurrent layer: F32 `[conv_channels, d_conv - 1]`, the inputs oldest first.
    pub conv: Vec<Tensor>,
    /// Per recurrent layer: F32 `[head_dim, head_dim, n_v_heads]`.
    pub delta: Vec<Tensor>,
    /// Per model layer: its index in `conv`/`delta` (`None`: an attention layer).
    slot: Vec<Option<usize>>,
    store: Arc<Store>,
}

impl RecurrentState {
    /// Zeroed state for the recurrent `layers` (of `n_layer`), in `backend`'s memory.
    pub fn new(
        backend: &Backend,
        ssm: SsmParams,
        n_layer: usize,
        layers: &[usize],
    ) -> Result<RecurrentState> {
        RecurrentState::new_in(backend.default_buffer_type(), ssm, n_layer, layers)
    }

    /// As [`new`](Self::new), in memory of `buft` (host memory for checkpoints).
    pub fn new_in(
        buft: ggml::BufferType,
        ssm: SsmParams,
        n_layer: usize,
        layers: &[usize],
    ) -> Result<RecurrentState> {
        let mut ctx = Context::new(2 * layers.len().max(1), 0);
        let (mut conv, mut delta) = (Vec::new(), Vec::new());
        let mut slot = vec![None; n_layer];
        let hd = ssm.head_dim as i64;
        for (i, &il) in layers.iter().enumerate() {
            slot[il] = Some(i);
            let c = ctx.new_tensor(
                Type::F32,
                &[ssm.conv_channels() as i64, ssm.d_conv as i64 - 1],
            );
            ctx.set_name(&c, &format!("conv_state_l{il}"));
            let d = ctx.new_tensor(Type::F32, &[hd, hd, ssm.n_v_heads as i64]);
            ctx.set_name(&d, &format!("delta_state_l{il}"));
            conv.push(c);
            delta.push(d);
        }
        let buffer = Buffer::alloc_ctx_tensors(&ctx, buft)
            .context("out of memory allocating the recurrent state")?;
        buffer.clear(0);
        Ok(RecurrentState {
            ssm,
            conv,
            delta,
            slot,
            store: Arc::new(Store { _ctx: ctx, buffer }),
        })
    }

    /// Layer `il`'s (conv, delta) state tensors. Panics for an attention layer.
    pub fn layer(&self, il: usize) -> (&Tensor, &Tensor) {
        let i = self.slot[il].expect("a recurrent layer");
        (&self.conv[i], &self.delta[i])
    }

    /// Back to the empty sequence (all zeros).
    pub fn clear(&self) {
        self.store.buffer.clear(0);
    }

    pub fn bytes(&self) -> usize {
        self.store.buffer.size()
    }

    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }

    /// Copy every layer's state from `other` (same geometry), on the device.
    pub fn copy_from(&self, other: &RecurrentState) {
        for (dst, src) in self.conv.iter().zip(&other.conv) {
            dst.copy_bytes_from(src, 0, 0, src.nbytes());
        }
        for (dst, src) in self.delta.iter().zip(&other.delta) {
            dst.copy_bytes_from(src, 0, 0, src.nbytes());
        }
    }
}

/// What a verify graph keeps of one recurrent layer so that any prefix of its tokens can be
/// committed without another forward.
#[derive(Clone)]
pub struct KeptStates {
    /// The model layer.
    pub layer: usize,
    /// F32 `[conv_channels, d_conv - 1 + n]`: the old conv state then the batch's inputs; the
    /// state after token `t` is the `d_conv - 1` columns ending at column `d_conv - 1 + t`.
    pub conv_rows: Tensor,
    /// The delta-net result: `n` output rows, then `n` states, the latest first.
    pub delta_out: Tensor,
}

impl KeptStates {
    /// Make `state` the state after the first `accepted` (>= 1) of the `n` tokens.
    /// The copies are queued on `backend`: synchronize it before the host or another stream
    /// reads the state.
    pub fn commit(&self, backend: &Backend, state: &RecurrentState, accepted: usize, n: usize) {
        assert!((1..=n).contains(&accepted));
        let (conv, delta) = state.layer(self.layer);
        let f = 4; // f32
        let ch = state.ssm.conv_channels();
        conv.copy_bytes_from_on(
            backend,
            &self.conv_rows,
            accepted * ch * f,
            0,
            conv.nbytes(),
        );
        let outputs = state.ssm.d_inner() * n * f;
        let back = n - accepted;
        delta.copy_bytes_from_on(
            backend,
            &self.delta_out,
            outputs + back * delta.nbytes(),
            0,
            delta.nbytes(),
        );
    }
}

/// What a tree verify graph keeps of one recurrent layer: every row's state, so that the
/// state after any node can be committed without another forward.
#[derive(Clone)]
pub struct KeptTreeStates {
    /// The model layer.
    pub layer: usize,
    /// F32 `[conv_channels, d_conv, rows]`: each row's convolution window (its ancestors'
    /// inputs then its own); the state after a row is its window's last `d_conv - 1` columns.
    pub windows: Tensor,
    /// Per depth level, the delta-net result of its rows as one-token sequences: the output
    /// rows, then one state per row.
    pub levels: Vec<Tensor>,
}

impl KeptTreeStates {
    /// Make `state` the state after the tree's row `row`, which sits at `slot` among the levels.
    /// The copies are queued on `backend`: synchronize it before the host or another stream
    /// reads the state.
    pub fn commit(&self, backend: &Backend, state: &RecurrentState, row: usize, slot: LevelSlot) {
        let (conv, delta) = state.layer(self.layer);
        let f = 4; // f32
        let ch = state.ssm.conv_channels();
        let dc = state.ssm.d_conv;
        conv.copy_bytes_from_on(
            backend,
            &self.windows,
            (row * dc + 1) * ch * f,
            0,
            conv.nbytes(),
        );
        let result = &self.levels[slot.level];
        let width = result.ne()[1] as usize / (1 + state.ssm.head_dim);
        let outputs = state.ssm.d_inner() * width * f;
        delta.copy_bytes_from_on(
            backend,
            result,
            outputs + slot.index * delta.nbytes(),
            0,
            delta.nbytes(),
        );
    }
}
