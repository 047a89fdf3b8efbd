//! Hidden-state capture: the residual-stream outputs of chosen target layers, for every token of
//! a batch, copied inside the target's own graph evaluation into a buffer owned by the engine.
//!
//! Layout: one row per token, the chosen layers' outputs concatenated in the order given
//! (`[n_layers_captured * n_embd, max_tokens]`), which is the input DFlash's `fc` expects.

use anyhow::{Context as _, Result};
use ggml::{Backend, Buffer, Context, Tensor, Type};
use std::any::Any;
use std::sync::Arc;

struct CaptureStore {
    _ctx: Context,
    _buffer: Buffer,
}

pub struct CaptureBuffer {
    /// Target layer indices (0-based), in output order.
    pub layers: Vec<usize>,
    pub n_embd: usize,
    pub max_tokens: usize,
    pub tensor: Tensor,
    store: Arc<CaptureStore>,
}

impl CaptureBuffer {
    pub fn new(
        backend: &Backend,
        layers: Vec<usize>,
        n_embd: usize,
        max_tokens: usize,
    ) -> Result<CaptureBuffer> {
        let mut ctx = Context::new(1, 0);
        let tensor = ctx.new_tensor(
            Type::F32,
            &[(layers.len() * n_embd) as i64, max_tokens as i64],
        );
        ctx.set_name(tensor, "capture");
        let buffer = Buffer::alloc_ctx_tensors(&ctx, backend.default_buffer_type())
            .context("out of memory allocating the hidden-state capture buffer")?;
        Ok(CaptureBuffer {
            layers,
            n_embd,
            max_tokens,
            tensor,
            store: Arc::new(CaptureStore {
                _ctx: ctx,
                _buffer: buffer,
            }),
        })
    }

    /// Where layer `il`'s output goes in the row, if it is captured.
    pub fn slot_of(&self, il: usize) -> Option<usize> {
        self.layers.iter().position(|&l| l == il)
    }

    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }

    /// Read the captured rows of the first `n_tokens` tokens of the last evaluation:
    /// `n_tokens * layers.len() * n_embd` floats, token-major.
    pub fn read(&self, n_tokens: usize) -> Vec<f32> {
        let mut out = vec![0f32; n_tokens * self.layers.len() * self.n_embd];
        self.tensor.read_f32_into(&mut out, 0);
        out
    }
}
