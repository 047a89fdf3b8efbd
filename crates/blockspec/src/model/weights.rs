//! Placing GGUF weights in backend memory.
//!
//! Each weight goes to the first buffer type (in the backend's preference order) that can run the
//! op the weight is used in, as llama.cpp decides: on the CPU, matmul weights of the types the CPU
//! repacks (Q4_0, Q4_K, ...) go to the repacking buffer (copied once, converted), everything else
//! is read in place from the memory-mapped file (no copy).

use crate::gguf::{Gguf, TensorInfo};
use anyhow::{bail, Context as _, Result};
use ggml::{Backend, Buffer, BufferType, Context, Tensor, WeightUse};
use std::any::Any;
use std::sync::Arc;

/// Keeps the contexts and buffers behind a set of weight tensors alive.
pub struct WeightStore {
    _ctxs: Vec<Context>,
    _buffers: Vec<Buffer>,
    /// Bytes per buffer type name, for the memory report.
    pub bytes_by_buffer: Vec<(String, usize)>,
}

/// The weights of one decoder layer (`T` is a tensor, or an index while loading).
#[derive(Clone, Debug)]
pub struct LayerWeights<T = Tensor> {
    pub attn_norm: T,
    pub wq: T,
    pub wk: T,
    pub wv: T,
    pub bq: Option<T>,
    pub bk: Option<T>,
    pub bv: Option<T>,
    pub wo: T,
    pub q_norm: Option<T>,
    pub k_norm: Option<T>,
    pub ffn_norm: T,
    pub ffn_gate: T,
    pub ffn_up: T,
    pub ffn_down: T,
}

impl<T> LayerWeights<T> {
    fn map<U>(self, mut f: impl FnMut(T) -> U) -> LayerWeights<U> {
        LayerWeights {
            attn_norm: f(self.attn_norm),
            wq: f(self.wq),
            wk: f(self.wk),
            wv: f(self.wv),
            bq: self.bq.map(&mut f),
            bk: self.bk.map(&mut f),
            bv: self.bv.map(&mut f),
            wo: f(self.wo),
            q_norm: self.q_norm.map(&mut f),
            k_norm: self.k_norm.map(&mut f),
            ffn_norm: f(self.ffn_norm),
            ffn_gate: f(self.ffn_gate),
            ffn_up: f(self.ffn_up),
            ffn_down: f(self.ffn_down),
        }
    }
}

/// All weights of a dense decoder-only model.
pub struct Weights {
    pub tok_embd: Tensor,
    pub output_norm: Tensor,
    /// The lm_head (a second placement of `tok_embd`'s bytes when the model ties them).
    pub output: Tensor,
    /// Per-frequency divisors of RoPE (Llama 3.1+ long-context scaling), shared by all layers.
    pub rope_freqs: Option<Tensor>,
    pub layers: Vec<LayerWeights>,
    pub store: Arc<WeightStore>,
}

impl Weights {
    /// The owner to `keep` in graph contexts that read these weights.
    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }
}

struct Planned {
    info: TensorInfo,
    /// Index into the loader's buffer type list.
    buft: usize,
}

/// Collects the tensors a model needs (checking names and shapes), then places them.
pub struct Loader<'a> {
    g: &'a Gguf,
    backend: &'a Backend,
    /// Candidate buffer types in order of preference; the last is the plain one.
    bufts: Vec<BufferType>,
    planned: Vec<Planned>,
}

impl<'a> Loader<'a> {
    pub fn new(g: &'a Gguf, backend: &'a Backend) -> Loader<'a> {
        let mut bufts = backend.extra_buffer_types();
        bufts.push(backend.default_buffer_type());
        Loader {
            g,
            backend,
            bufts,
            planned: Vec::new(),
        }
    }

    /// Declare a required tensor `name` of shape `ne` (ggml order), used as `usage`.
    pub fn require(&mut self, name: &str, ne: &[usize], usage: WeightUse) -> Result<usize> {
        let Some(info) = self.g.tensor(name) else {
            bail!("{}: missing tensor {name}", self.g.path().display())
        };
        self.plan(info.clone(), ne, usage)
    }

    /// Declare an optional tensor.
    pub fn optional(
        &mut self,
        name: &str,
        ne: &[usize],
        usage: WeightUse,
    ) -> Result<Option<usize>> {
        match self.g.tensor(name) {
            None => Ok(None),
            Some(info) => self.plan(info.clone(), ne, usage).map(Some),
        }
    }

    /// Declare a second placement of tensor `name` under a new name (tied embeddings: the
    /// same bytes used by get_rows and by the lm_head matmul may want different buffers).
    pub fn duplicate(
        &mut self,
        name: &str,
        as_name: &str,
        ne: &[usize],
        usage: WeightUse,
    ) -> Result<usize> {
        let Some(info) = self.g.tensor(name) else {
            bail!("{}: missing tensor {name}", self.g.path().display())
        };
        let mut info = info.clone();
        info.name = as_name.to_string();
        self.plan(info, ne, usage)
    }

    fn plan(&mut self, info: TensorInfo, ne: &[usize], usage: WeightUse) -> Result<usize> {
        let mut want = [1i64; 4];
        for (w, &n) in want.iter_mut().zip(ne) {
            *w = n as i64;
        }
        if info.ne != want {
            bail!(
                "{}: tensor {} has shape {:?}, expected {:?}",
                self.g.path().display(),
                info.name,
                &info.ne[..info.n_dims],
                ne
            );
        }
        let buft = (0..self.bufts.len())
            .find(|&i| {
                i + 1 == self.bufts.len()
                    || self
                        .backend
                        .supports_weight(info.ty, info.ne, usage, self.bufts[i])
            })
            .expect("the default buffer type is always a candidate");
        self.planned.push(Planned { info, buft });
        Ok(self.planned.len() - 1)
    }

    /// Create and fill every declared tensor; returns them by declaration index.
    pub fn load(self, progress: bool) -> Result<(Vec<Tensor>, Arc<WeightStore>)> {
        let n = self.planned.len();
        let mut tensors: Vec<Option<Tensor>> = vec![None; n];
        let mut ctxs = Vec::new();
        let mut buffers = Vec::new();
        let mut bytes_by_buffer = Vec::new();
        let total: u64 = self.planned.iter().map(|p| p.info.nbytes).sum();
        let bar = crate::progress::bytes_bar(total, "loading weights", progress);

        // Tensors in the plain host buffer type are read in place from the mapped file(s).
        let host_in_place = |buft: BufferType| buft == BufferType::cpu();
        for (bi, &buft) in self.bufts.iter().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| self.planned[i].buft == bi).collect();
            if members.is_empty() {
                continue;
            }
            if host_in_place(buft) {
                // One context + one buffer per mapped file.
                for (fi, file) in self.g.files.iter().enumerate() {
                    let here: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|&i| self.planned[i].info.file == fi)
                        .collect();
                    if here.is_empty() {
                        continue;
                    }
                    let mut ctx = Context::new(here.len(), 0);
                    let buf = Buffer::from_host_memory(file.clone());
                    buf.set_usage_weights();
                    let mut sum = 0usize;
                    for &i in &here {
                        let p = &self.planned[i];
                        let t = ctx.new_tensor(p.info.ty, &p.info.ne[..p.info.n_dims]);
                        ctx.set_name(t, &p.info.name);
                        buf.place(t, p.info.offset as usize);
                        sum += t.nbytes();
                        tensors[i] = Some(t);
                        bar.inc(p.info.nbytes);
                    }
                    bytes_by_buffer.push((format!("{} (mapped)", buft.name()), sum));
                    ctxs.push(ctx);
                    buffers.push(buf);
                }
            } else {
                let mut ctx = Context::new(members.len(), 0);
                for &i in &members {
                    let p = &self.planned[i];
                    let t = ctx.new_tensor(p.info.ty, &p.info.ne[..p.info.n_dims]);
                    ctx.set_name(t, &p.info.name);
                    tensors[i] = Some(t);
                }
                let buf = Buffer::alloc_ctx_tensors(&ctx, buft).with_context(|| {
                    format!("out of memory allocating weights in {}", buft.name())
                })?;
                buf.set_usage_weights();
                for &i in &members {
                    let p = &self.planned[i];
                    let t = tensors[i].expect("created above");
                    t.write_bytes(self.g.tensor_bytes(&p.info), 0);
                    bar.inc(p.info.nbytes);
                }
                bytes_by_buffer.push((buft.name(), buf.size()));
                ctxs.push(ctx);
                buffers.push(buf);
            }
        }
        bar.finish_and_clear();
        let tensors = tensors
            .into_iter()
            .map(|t| t.expect("every planned tensor placed"))
            .collect();
        Ok((
            tensors,
            Arc::new(WeightStore {
                _ctxs: ctxs,
                _buffers: buffers,
                bytes_by_buffer,
            }),
        ))
    }
}

/// Declare the standard tensors of a dense decoder (llama.cpp names).
pub fn declare_dense(loader: &mut Loader, hp: &super::Hparams) -> Result<DenseDecl> {
    let (e, ekv, hd, ff, nv) = (hp.n_embd, hp.n_embd_kv(), hp.head_dim, hp.n_ff, hp.n_vocab);
    let eq = hp.head_dim * hp.n_head;
    let tok_embd = loader.require("token_embd.weight", &[e, nv], WeightUse::GetRows)?;
    let output_norm = loader.require("output_norm.weight", &[e], WeightUse::Other)?;
    let output = match loader.optional("output.weight", &[e, nv], WeightUse::MulMat)? {
        Some(o) => o,
        None => loader.duplicate(
            "token_embd.weight",
            "output.weight",
            &[e, nv],
            WeightUse::MulMat,
        )?,
    };
    let rope_freqs =
        loader.optional("rope_freqs.weight", &[hp.rope.n_rot / 2], WeightUse::Other)?;
    let mut layers = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{il}.{s}");
        let bias = |l: &mut Loader, s: &str, len: usize| -> Result<Option<usize>> {
            if hp.variant.qkv_bias {
                l.require(&n(s), &[len], WeightUse::Other).map(Some)
            } else {
                l.optional(&n(s), &[len], WeightUse::Other)
            }
        };
        let norm = |l: &mut Loader, s: &str| -> Result<Option<usize>> {
            if hp.variant.qk_norm {
                l.require(&n(s), &[hd], WeightUse::Other).map(Some)
            } else {
                Ok(None)
            }
        };
        layers.push(LayerWeights {
            attn_norm: loader.require(&n("attn_norm.weight"), &[e], WeightUse::Other)?,
            wq: loader.require(&n("attn_q.weight"), &[e, eq], WeightUse::MulMat)?,
            wk: loader.require(&n("attn_k.weight"), &[e, ekv], WeightUse::MulMat)?,
            wv: loader.require(&n("attn_v.weight"), &[e, ekv], WeightUse::MulMat)?,
            bq: bias(loader, "attn_q.bias", eq)?,
            bk: bias(loader, "attn_k.bias", ekv)?,
            bv: bias(loader, "attn_v.bias", ekv)?,
            wo: loader.require(&n("attn_output.weight"), &[eq, e], WeightUse::MulMat)?,
            q_norm: norm(loader, "attn_q_norm.weight")?,
            k_norm: norm(loader, "attn_k_norm.weight")?,
            ffn_norm: loader.require(&n("ffn_norm.weight"), &[e], WeightUse::Other)?,
            ffn_gate: loader.require(&n("ffn_gate.weight"), &[e, ff], WeightUse::MulMat)?,
            ffn_up: loader.require(&n("ffn_up.weight"), &[e, ff], WeightUse::MulMat)?,
            ffn_down: loader.require(&n("ffn_down.weight"), &[ff, e], WeightUse::MulMat)?,
        });
    }
    Ok(DenseDecl {
        tok_embd,
        output_norm,
        output,
        rope_freqs,
        layers,
    })
}

/// Declaration indices of a dense model's tensors (resolved by [`DenseDecl::resolve`]).
pub struct DenseDecl {
    tok_embd: usize,
    output_norm: usize,
    output: usize,
    rope_freqs: Option<usize>,
    layers: Vec<LayerWeights<usize>>,
}

impl DenseDecl {
    pub fn resolve(self, tensors: &[Tensor], store: Arc<WeightStore>) -> Weights {
        Weights {
            tok_embd: tensors[self.tok_embd],
            output_norm: tensors[self.output_norm],
            output: tensors[self.output],
            rope_freqs: self.rope_freqs.map(|i| tensors[i]),
            layers: self
                .layers
                .into_iter()
                .map(|l| l.map(|i| tensors[i]))
                .collect(),
            store,
        }
    }
}

/// Load a dense decoder's weights onto `backend`.
pub fn load_dense(
    g: &Gguf,
    backend: &Backend,
    hp: &super::Hparams,
    progress: bool,
) -> Result<Weights> {
    let mut loader = Loader::new(g, backend);
    let decl = declare_dense(&mut loader, hp)?;
    let (tensors, store) = loader.load(progress)?;
    Ok(decl.resolve(&tensors, store))
}
