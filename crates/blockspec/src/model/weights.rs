//! Placing GGUF weights in backend memory.
//!
//! Each weight goes to the first buffer type (in the backend's preference order) that can run the
//! op the weight is used in, as llama.cpp decides: on the CPU, matmul weights of the types the CPU
//! repacks (Q4_0, Q4_K, ...) go to the repacking buffer (copied once, converted), everything else
//! is read in place from the memory-mapped file (no copy).

use crate::format::gguf::{Gguf, MappedFile, TensorInfo};
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
    pub ffn: Ffn<T>,
}

/// A layer's feed-forward block: one SwiGLU MLP, or routed experts.
#[derive(Clone, Debug)]
pub enum Ffn<T = Tensor> {
    Dense { gate: T, up: T, down: T },
    Moe(super::moe::MoeWeights<T>),
}

impl<T> Ffn<T> {
    pub(crate) fn map<U>(self, mut f: impl FnMut(T) -> U) -> Ffn<U> {
        match self {
            Ffn::Dense { gate, up, down } => Ffn::Dense {
                gate: f(gate),
                up: f(up),
                down: f(down),
            },
            Ffn::Moe(m) => Ffn::Moe(m.map(f)),
        }
    }
}

/// The decoder layers of a model: all attention, or hybrid (recurrent and attention).
pub enum Layers {
    Dense(Vec<LayerWeights>),
    Hybrid(Vec<super::hybrid::HybridLayer>),
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
            ffn: self.ffn.map(f),
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
    pub layers: Layers,
    pub store: Arc<WeightStore>,
}

impl Weights {
    /// The owner to `keep` in graph contexts that read these weights.
    pub fn owner(&self) -> Arc<dyn Any + Send + Sync> {
        self.store.clone()
    }
}

/// Where a weight's bytes are: inside a memory-mapped file (usable in place), or in memory we
/// own (converted from another format).
#[derive(Clone)]
pub enum WeightBytes {
    Mapped { file: Arc<MappedFile>, offset: u64 },
    Owned(Arc<Vec<u8>>),
}

/// A tensor as a weight source offers it.
#[derive(Clone)]
pub struct SourceTensor {
    pub name: String,
    pub ty: ggml::Type,
    pub ne: [i64; 4],
    pub n_dims: usize,
    pub bytes: WeightBytes,
}

impl SourceTensor {
    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            WeightBytes::Mapped { file, offset } => {
                let n = self.nbytes();
                &file.map[*offset as usize..*offset as usize + n]
            }
            WeightBytes::Owned(v) => v,
        }
    }
    pub fn nbytes(&self) -> usize {
        let row = self.ty.row_bytes(self.ne[0] as u64).unwrap_or(0) as usize;
        row * self.ne[1..].iter().product::<i64>() as usize
    }
}

/// Something weights are read from (a GGUF, a safetensors directory).
pub trait TensorSource {
    /// For error messages: the file or directory.
    fn describe(&self) -> String;
    fn find(&self, name: &str) -> Option<SourceTensor>;
}

/// A source whose float matrices (f32, f16, bf16; 2-D) are quantized to `ty` as they are read
/// (`--draft-type q8_0`). Vectors (norms, biases) and already quantized tensors pass through.
pub struct Requantized<'a> {
    pub inner: &'a dyn TensorSource,
    pub ty: ggml::Type,
}

impl TensorSource for Requantized<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn find(&self, name: &str) -> Option<SourceTensor> {
        let t = self.inner.find(name)?;
        let float = [ggml::Type::F32, ggml::Type::F16, ggml::Type::BF16].contains(&t.ty);
        if t.n_dims != 2 || !float || !(t.ne[0] as u64).is_multiple_of(self.ty.block_size()) {
            return Some(t);
        }
        let d = t.data();
        let f: Vec<f32> = match t.ty {
            ggml::Type::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            ggml::Type::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        };
        let (n_per_row, nrows) = (t.ne[0] as usize, t.ne[1] as usize);
        match self.ty.quantize(&f, nrows, n_per_row) {
            Some(q) => Some(SourceTensor {
                ty: self.ty,
                bytes: WeightBytes::Owned(Arc::new(q)),
                ..t
            }),
            None => Some(t),
        }
    }
}

impl TensorSource for Gguf {
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
    fn find(&self, name: &str) -> Option<SourceTensor> {
        let t: &TensorInfo = self.tensor(name)?;
        Some(SourceTensor {
            name: t.name.clone(),
            ty: t.ty,
            ne: t.ne,
            n_dims: t.n_dims,
            bytes: WeightBytes::Mapped {
                file: self.files[t.file].clone(),
                offset: t.offset,
            },
        })
    }
}

struct Planned {
    src: SourceTensor,
    /// Index into the loader's buffer type list.
    buft: usize,
}

/// Collects the tensors a model needs (checking names and shapes), then places them.
pub struct Loader<'a> {
    g: &'a dyn TensorSource,
    backend: &'a Backend,
    /// Candidate buffer types in order of preference; the last is the plain one.
    bufts: Vec<BufferType>,
    planned: Vec<Planned>,
}

impl<'a> Loader<'a> {
    /// `repack`: let the backend convert matmul weights to its faster layouts (the CPU's
    /// repacked Q4_0/Q4_K...). Those kernels round differently for a one-row batch than for a
    /// multi-row one, so a speculative verify would not reproduce plain decoding bit for bit;
    /// turn it off for batch-invariant (exactly lossless) speculation.
    pub fn new(g: &'a dyn TensorSource, backend: &'a Backend, repack: bool) -> Loader<'a> {
        let mut bufts = if repack {
            backend.extra_buffer_types()
        } else {
            Vec::new()
        };
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
        let Some(t) = self.g.find(name) else {
            bail!("{}: missing tensor {name}", self.g.describe())
        };
        self.plan(t, ne, usage)
    }

    /// Declare an optional tensor.
    pub fn optional(
        &mut self,
        name: &str,
        ne: &[usize],
        usage: WeightUse,
    ) -> Result<Option<usize>> {
        match self.g.find(name) {
            None => Ok(None),
            Some(t) => self.plan(t, ne, usage).map(Some),
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
        let Some(mut t) = self.g.find(name) else {
            bail!("{}: missing tensor {name}", self.g.describe())
        };
        t.name = as_name.to_string();
        self.plan(t, ne, usage)
    }

    fn plan(&mut self, src: SourceTensor, ne: &[usize], usage: WeightUse) -> Result<usize> {
        let mut want = [1i64; 4];
        for (w, &n) in want.iter_mut().zip(ne) {
            *w = n as i64;
        }
        if src.ne != want {
            bail!(
                "{}: tensor {} has shape {:?}, expected {:?}",
                self.g.describe(),
                src.name,
                &src.ne[..src.n_dims],
                ne
            );
        }
        let buft = (0..self.bufts.len())
            .find(|&i| {
                i + 1 == self.bufts.len()
                    || self
                        .backend
                        .supports_weight(src.ty, src.ne, usage, self.bufts[i])
            })
            .expect("the default buffer type is always a candidate");
        self.planned.push(Planned { src, buft });
        Ok(self.planned.len() - 1)
    }

    /// Create and fill every declared tensor; returns them by declaration index.
    pub fn load(self, progress: bool) -> Result<(Vec<Tensor>, Arc<WeightStore>)> {
        let n = self.planned.len();
        let mut tensors: Vec<Option<Tensor>> = vec![None; n];
        let mut ctxs = Vec::new();
        let mut buffers = Vec::new();
        let mut bytes_by_buffer = Vec::new();
        let total: u64 = self.planned.iter().map(|p| p.src.nbytes() as u64).sum();
        let bar = crate::model::progress::bytes_bar(total, "loading weights", progress);

        for (bi, &buft) in self.bufts.iter().enumerate() {
            let members: Vec<usize> = (0..n).filter(|&i| self.planned[i].buft == bi).collect();
            if members.is_empty() {
                continue;
            }
            // Mapped tensors in the plain host buffer type are read in place: one buffer over
            // each mapped file, no copy.
            let mut copied = Vec::new();
            if buft == BufferType::cpu() {
                let mut files: Vec<Arc<MappedFile>> = Vec::new();
                for &i in &members {
                    match &self.planned[i].src.bytes {
                        WeightBytes::Mapped { file, .. }
                            if !files.iter().any(|f| Arc::ptr_eq(f, file)) =>
                        {
                            files.push(file.clone())
                        }
                        WeightBytes::Mapped { .. } => {}
                        WeightBytes::Owned(_) => copied.push(i),
                    }
                }
                for file in files {
                    let here: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|&i| matches!(&self.planned[i].src.bytes, WeightBytes::Mapped { file: f, .. } if Arc::ptr_eq(f, &file)))
                        .collect();
                    let mut ctx = Context::new(here.len(), 0);
                    let buf = Buffer::from_host_memory(file.clone());
                    buf.set_usage_weights();
                    let mut sum = 0usize;
                    for &i in &here {
                        let p = &self.planned[i].src;
                        let t = ctx.new_tensor(p.ty, &p.ne[..p.n_dims]);
                        ctx.set_name(&t, &p.name);
                        let WeightBytes::Mapped { offset, .. } = &p.bytes else {
                            unreachable!("filtered")
                        };
                        buf.place(&t, *offset as usize);
                        sum += t.nbytes();
                        tensors[i] = Some(t);
                        bar.inc(p.nbytes() as u64);
                    }
                    bytes_by_buffer.push((format!("{} (mapped)", buft.name()), sum));
                    ctxs.push(ctx);
                    buffers.push(buf);
                }
            } else {
                copied = members;
            }
            if copied.is_empty() {
                continue;
            }
            let mut ctx = Context::new(copied.len(), 0);
            for &i in &copied {
                let p = &self.planned[i].src;
                let t = ctx.new_tensor(p.ty, &p.ne[..p.n_dims]);
                ctx.set_name(&t, &p.name);
                tensors[i] = Some(t);
            }
            let buf = Buffer::alloc_ctx_tensors(&ctx, buft)
                .with_context(|| format!("out of memory allocating weights in {}", buft.name()))?;
            buf.set_usage_weights();
            for &i in &copied {
                let p = &self.planned[i].src;
                tensors[i]
                    .clone()
                    .expect("created above")
                    .write_bytes(p.data(), 0);
                bar.inc(p.nbytes() as u64);
            }
            bytes_by_buffer.push((buft.name(), buf.size()));
            ctxs.push(ctx);
            buffers.push(buf);
        }
        bar.finish_and_clear();
        for (name, bytes) in &bytes_by_buffer {
            tracing::debug!(
                "weights buffer {name}: {:.2} MiB",
                *bytes as f64 / (1 << 20) as f64
            );
        }
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
    let (e, ekv, hd) = (hp.n_embd, hp.n_embd_kv(), hp.head_dim);
    let eq = hp.head_dim * hp.n_head;
    let head = declare_head(loader, hp)?;
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
            ffn: declare_ffn(loader, hp, il)?,
        });
    }
    Ok(DenseDecl { head, layers })
}

/// Declare layer `il`'s feed-forward tensors: routed experts if the model has them, else a
/// SwiGLU MLP of `hp.n_ff`.
pub fn declare_ffn(loader: &mut Loader, hp: &super::Hparams, il: usize) -> Result<Ffn<usize>> {
    if let Some(moe) = &hp.moe {
        return super::moe::declare(loader, hp.n_embd, moe, il).map(Ffn::Moe);
    }
    let (e, ff) = (hp.n_embd, hp.n_ff);
    let n = |s: &str| format!("blk.{il}.{s}");
    Ok(Ffn::Dense {
        gate: loader.require(&n("ffn_gate.weight"), &[e, ff], WeightUse::MulMat)?,
        up: loader.require(&n("ffn_up.weight"), &[e, ff], WeightUse::MulMat)?,
        down: loader.require(&n("ffn_down.weight"), &[ff, e], WeightUse::MulMat)?,
    })
}

/// The tensors every decoder has outside its layers: embeddings, final norm, lm_head (the
/// embeddings again when tied), RoPE frequency factors.
pub struct HeadDecl {
    pub tok_embd: usize,
    pub output_norm: usize,
    pub output: usize,
    pub rope_freqs: Option<usize>,
}

/// Declare the [`HeadDecl`] tensors.
pub fn declare_head(loader: &mut Loader, hp: &super::Hparams) -> Result<HeadDecl> {
    let (e, nv) = (hp.n_embd, hp.n_vocab);
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
    Ok(HeadDecl {
        tok_embd,
        output_norm,
        output,
        rope_freqs,
    })
}

impl HeadDecl {
    /// The model's weights, around `layers`.
    pub fn resolve(&self, tensors: &[Tensor], layers: Layers, store: Arc<WeightStore>) -> Weights {
        Weights {
            tok_embd: tensors[self.tok_embd].clone(),
            output_norm: tensors[self.output_norm].clone(),
            output: tensors[self.output].clone(),
            rope_freqs: self.rope_freqs.map(|i| tensors[i].clone()),
            layers,
            store,
        }
    }
}

/// Declaration indices of a dense model's tensors (resolved by [`DenseDecl::resolve`]).
pub struct DenseDecl {
    head: HeadDecl,
    layers: Vec<LayerWeights<usize>>,
}

impl DenseDecl {
    pub fn resolve(self, tensors: &[Tensor], store: Arc<WeightStore>) -> Weights {
        let layers = self
            .layers
            .into_iter()
            .map(|l| l.map(|i| tensors[i].clone()))
            .collect();
        self.head.resolve(tensors, Layers::Dense(layers), store)
    }
}

/// Load a dense decoder's weights onto `backend`.
pub fn load_dense(
    g: &Gguf,
    backend: &Backend,
    hp: &super::Hparams,
    progress: bool,
    repack: bool,
) -> Result<Weights> {
    let mut loader = Loader::new(g, backend, repack);
    let decl = declare_dense(&mut loader, hp)?;
    let (tensors, store) = loader.load(progress)?;
    Ok(decl.resolve(&tensors, store))
}
