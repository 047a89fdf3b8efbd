//! Hidden-state capture: the residual-stream outputs of chosen target layers, for every token of
//! a batch, copied inside the target's own graph evaluation into a buffer owned by the engine.
//!
//! Layout: one row per token, the chosen layers' outputs concatenated in the order given
//! (`[n_layers_captured * n_embd, max_tokens]`), which is the input DFlash's `fc` expects.

use anyhow::{Context as _, Result};
use ggml::{Backend, Buffer, Context, PinnedHost, Tensor, Type};
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Evaluations that have written the buffer so far (see [`CapturedRows`]).
    epoch: Arc<AtomicU64>,
}

/// The first `rows` rows of a capture buffer, left where the target's graph wrote them (on its
/// device) for a drafter to read inside its own graph: no copy to the host and back. Valid until
/// the target evaluates again and overwrites the buffer; [`is_current`](Self::is_current) says
/// whether it still holds them.
#[derive(Clone)]
pub struct CapturedRows {
    /// The whole capture buffer (`[n_layers_captured * n_embd, max_tokens]`, F32).
    pub tensor: Tensor,
    /// Keeps the buffer alive for graphs that read it.
    pub owner: Arc<dyn Any + Send + Sync>,
    pub rows: usize,
    epoch: u64,
    current: Arc<AtomicU64>,
}

impl CapturedRows {
    /// Whether the buffer still holds these rows (the target has not evaluated since).
    pub fn is_current(&self) -> bool {
        self.current.load(Ordering::Acquire) == self.epoch
    }

    /// Append the rows to `out` (token-major), reading them from the device.
    pub fn read_into(&self, out: &mut Vec<f32>) {
        let nf = self.tensor.ne()[0] as usize;
        read_f32_staged(&self.tensor, 0, self.rows * nf, None, out);
    }
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
        ctx.set_name(&tensor, "capture");
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
            epoch: Arc::new(AtomicU64::new(0)),
        })
    }

    /// An evaluation is about to overwrite the buffer: every [`CapturedRows`] handed out so far
    /// stops being current.
    pub fn begin_write(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The first `rows` rows as the last evaluation left them.
    pub fn rows_on_device(&self, rows: usize) -> CapturedRows {
        CapturedRows {
            tensor: self.tensor.clone(),
            owner: self.owner(),
            rows,
            epoch: self.epoch.load(Ordering::Acquire),
            current: self.epoch.clone(),
        }
    }

    /// Where layer `il`'s output goes in the row, if it is captured.
    pub fn slot_of(&self, il: usize) -> Option<usize> {
        self.layers.iter().position(|&l| l == il)
    }

    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }

    /// Append the captured rows `first..first + n` of the last evaluation to `out`
    /// (`n * layers.len() * n_embd` floats, token-major), through `staging` if given.
    pub fn read_rows(
        &self,
        first: usize,
        n: usize,
        staging: Option<&mut PinnedHost>,
        out: &mut Vec<f32>,
    ) {
        let nf = self.layers.len() * self.n_embd;
        read_f32_staged(&self.tensor, first * nf, n * nf, staging, out);
    }
}

/// Append `n` f32s of `t` from element `first` to `out`. Through page-locked `staging` (in
/// pieces of its size) when given: a device-to-host copy into pageable memory runs at a fraction
/// of the bus speed.
pub fn read_f32_staged(
    t: &Tensor,
    first: usize,
    n: usize,
    staging: Option<&mut PinnedHost>,
    out: &mut Vec<f32>,
) {
    match staging {
        Some(st) => {
            let buf = st.as_f32_mut();
            let mut done = 0;
            while done < n {
                let k = (n - done).min(buf.len());
                t.read_f32_into(&mut buf[..k], first + done);
                out.extend_from_slice(&buf[..k]);
                done += k;
            }
        }
        None => {
            let old = out.len();
            out.resize(old + n, 0.0);
            t.read_f32_into(&mut out[old..], first);
        }
    }
}
