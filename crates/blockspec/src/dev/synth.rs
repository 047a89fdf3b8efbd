//! Synthetic random-weight models, for tests and timing. Their metadata says so
//! (`general.description`); they are never meant to produce useful text.

use crate::decode::draft::dflash::gguf::{dflash_kv, DFlashMeta};
use crate::format::gguf::Value;
use crate::format::gguf_write::{write_gguf, TensorData};
use crate::model::Hparams;
use ggml::Type;
use std::io;
use std::path::Path;

/// Shape of a random DFlash drafter for a given target.
#[derive(Clone, Debug)]
pub struct DraftSpec {
    pub n_layer: usize,
    pub block_size: usize,
    /// 0-based target layers (written +1, as llama.cpp's `dflash` arch stores them).
    pub target_layers: Vec<usize>,
    pub mask_token_id: u32,
    pub seed: u64,
    /// Standard deviation of the random weights.
    pub scale: f32,
}

struct Rng(u64);
impl Rng {
    /// xorshift64*
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// A uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn f16_tensor(name: String, ne: Vec<u64>, rng: &mut Rng, scale: f32) -> TensorData {
    let n: u64 = ne.iter().product();
    // uniform [-1,1) has std 1/sqrt(3)
    let k = scale * 3f32.sqrt();
    let data = (0..n)
        .flat_map(|_| {
            half::f16::from_f32(rng.next_f32() * k)
                .to_bits()
                .to_le_bytes()
        })
        .collect();
    TensorData {
        name,
        ne,
        ty: Type::F16,
        data,
    }
}

fn ones(name: String, n: u64) -> TensorData {
    let data = (0..n).flat_map(|_| 1f32.to_le_bytes()).collect();
    TensorData {
        name,
        ne: vec![n],
        ty: Type::F32,
        data,
    }
}

/// Write a random DFlash drafter for a target with hyperparameters `hp` (llama.cpp `dflash` GGUF).
/// The drafter uses the target's head layout and feed-forward size.
pub fn write_random_dflash(path: &Path, hp: &Hparams, spec: &DraftSpec) -> io::Result<()> {
    write_random_dflash_with(path, hp, spec, Vec::new())
}

/// Like [`write_random_dflash`], with extra metadata: llama.cpp loads a `dflash` GGUF only with
/// the target's `tokenizer.*` keys in it (its converter copies them), so `synth --dflash-for`
/// passes those.
pub fn write_random_dflash_with(
    path: &Path,
    hp: &Hparams,
    spec: &DraftSpec,
    extra: Vec<(String, Value)>,
) -> io::Result<()> {
    let e = hp.n_embd as u64;
    let (hd, nh, nkv, ff) = (
        hp.head_dim as u64,
        hp.n_head as u64,
        hp.n_head_kv as u64,
        hp.n_ff as u64,
    );
    let kv = dflash_kv(&DFlashMeta {
        name: "random DFlash drafter",
        description: Some("SYNTHETIC random weights made by blockspec, for tests and timing only"),
        n_layer: spec.n_layer,
        n_ctx: hp.n_ctx_train,
        n_embd: hp.n_embd,
        n_ff: hp.n_ff,
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim: hp.head_dim,
        rms_eps: hp.rms_eps,
        rope_theta: hp.rope.freq_base,
        block_size: spec.block_size,
        target_layers: &spec.target_layers,
        mask_token_id: spec.mask_token_id,
    });
    let mut rng = Rng(spec.seed | 1);
    let s = spec.scale;
    let n_taps = spec.target_layers.len() as u64;
    let mut t = vec![
        f16_tensor("fc.weight".into(), vec![e * n_taps, e], &mut rng, s),
        ones("enc.output_norm.weight".into(), e),
        ones("output_norm.weight".into(), e),
    ];
    for il in 0..spec.n_layer {
        let n = |x: &str| format!("blk.{il}.{x}.weight");
        t.push(ones(n("attn_norm"), e));
        t.push(f16_tensor(n("attn_q"), vec![e, hd * nh], &mut rng, s));
        t.push(f16_tensor(n("attn_k"), vec![e, hd * nkv], &mut rng, s));
        t.push(f16_tensor(n("attn_v"), vec![e, hd * nkv], &mut rng, s));
        t.push(f16_tensor(n("attn_output"), vec![hd * nh, e], &mut rng, s));
        t.push(ones(n("attn_q_norm"), hd));
        t.push(ones(n("attn_k_norm"), hd));
        t.push(ones(n("ffn_norm"), e));
        t.push(f16_tensor(n("ffn_gate"), vec![e, ff], &mut rng, s));
        t.push(f16_tensor(n("ffn_up"), vec![e, ff], &mut rng, s));
        t.push(f16_tensor(n("ffn_down"), vec![ff, e], &mut rng, s));
    }
    let mut kv = kv;
    kv.extend(extra);
    let mut f = io::BufWriter::new(std::fs::File::create(path)?);
    write_gguf(&mut f, &kv, &t)
}

/// Real model shapes `synth --like` can imitate.
#[derive(Clone, Copy, Debug)]
pub struct TargetShape {
    pub name: &'static str,
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub rope_theta: f32,
    pub tied: bool,
    /// q/k/v biases (Qwen2).
    pub qkv_bias: bool,
    /// per-head q/k RMS norms (Qwen3).
    pub qk_norm: bool,
    /// Routed experts instead of a dense feed-forward.
    pub moe: Option<MoeShape>,
    /// Gated DeltaNet layers (Qwen3.5/3.6 hybrids).
    pub hybrid: Option<HybridShape>,
}

/// The experts of a MoE shape.
#[derive(Clone, Copy, Debug)]
pub struct MoeShape {
    pub n_expert: usize,
    pub n_used: usize,
    pub n_ff_exp: usize,
    /// Shared expert width (0: none).
    pub n_ff_shexp: usize,
}

/// The recurrent side of a Qwen3.5-style hybrid shape.
#[derive(Clone, Copy, Debug)]
pub struct HybridShape {
    /// Every this-many-th layer is attention (4).
    pub full_every: usize,
    pub n_k_heads: usize,
    pub n_v_heads: usize,
    /// dk = dv.
    pub head_dim: usize,
    pub d_conv: usize,
    /// Rotary dimensions of the attention heads (partial RoPE) and their M-RoPE sections.
    pub n_rot: usize,
    pub sections: [i32; 4],
}

pub const TARGET_SHAPES: &[TargetShape] = &[
    TargetShape {
        name: "qwen3-8b",
        arch: "qwen3",
        n_layer: 36,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: 12288,
        n_vocab: 151936,
        n_ctx: 40960,
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: false,
        qk_norm: true,
        moe: None,
        hybrid: None,
    },
    TargetShape {
        name: "qwen3-4b",
        arch: "qwen3",
        n_layer: 36,
        n_embd: 2560,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: 9728,
        n_vocab: 151936,
        n_ctx: 40960,
        rope_theta: 1_000_000.0,
        tied: true,
        qkv_bias: false,
        qk_norm: true,
        moe: None,
        hybrid: None,
    },
    TargetShape {
        name: "llama-3.1-8b",
        arch: "llama",
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: 14336,
        n_vocab: 128256,
        n_ctx: 131072,
        rope_theta: 500_000.0,
        tied: false,
        qkv_bias: false,
        qk_norm: false,
        moe: None,
        hybrid: None,
    },
    TargetShape {
        name: "qwen2.5-1.5b",
        arch: "qwen2",
        n_layer: 28,
        n_embd: 1536,
        n_head: 12,
        n_head_kv: 2,
        head_dim: 128,
        n_ff: 8960,
        n_vocab: 151936,
        n_ctx: 32768,
        rope_theta: 1_000_000.0,
        tied: false,
        qkv_bias: true,
        qk_norm: false,
        moe: None,
        hybrid: None,
    },
    // Qwen3-30B-A3B / Qwen3-Coder-30B-A3B (the DDTree paper's target).
    TargetShape {
        name: "qwen3-30b-a3b",
        arch: "qwen3moe",
        n_layer: 48,
        n_embd: 2048,
        n_head: 32,
        n_head_kv: 4,
        head_dim: 128,
        n_ff: 6144,
        n_vocab: 151936,
        n_ctx: 262144,
        rope_theta: 10_000_000.0,
        tied: false,
        qkv_bias: false,
        qk_norm: true,
        moe: Some(MoeShape {
            n_expert: 128,
            n_used: 8,
            n_ff_exp: 768,
            n_ff_shexp: 0,
        }),
        hybrid: None,
    },
    // Qwen3.5-27B / Qwen3.6-27B: 48 Gated DeltaNet + 16 gated attention layers.
    TargetShape {
        name: "qwen3.5-27b",
        arch: "qwen35",
        n_layer: 64,
        n_embd: 5120,
        n_head: 24,
        n_head_kv: 4,
        head_dim: 256,
        n_ff: 17408,
        n_vocab: 248320,
        n_ctx: 262144,
        rope_theta: 10_000_000.0,
        tied: false,
        qkv_bias: false,
        qk_norm: true,
        moe: None,
        hybrid: Some(HybridShape {
            full_every: 4,
            n_k_heads: 16,
            n_v_heads: 48,
            head_dim: 128,
            d_conv: 4,
            n_rot: 64,
            sections: [11, 11, 10, 0],
        }),
    },
    // Qwen3.6-35B-A3B: the hybrid stack with 256 experts (8 used) and a shared expert.
    TargetShape {
        name: "qwen3.6-35b-a3b",
        arch: "qwen35moe",
        n_layer: 40,
        n_embd: 2048,
        n_head: 16,
        n_head_kv: 2,
        head_dim: 256,
        n_ff: 512,
        n_vocab: 248320,
        n_ctx: 262144,
        rope_theta: 10_000_000.0,
        tied: false,
        qkv_bias: false,
        qk_norm: true,
        moe: Some(MoeShape {
            n_expert: 256,
            n_used: 8,
            n_ff_exp: 512,
            n_ff_shexp: 512,
        }),
        hybrid: Some(HybridShape {
            full_every: 4,
            n_k_heads: 16,
            n_v_heads: 32,
            head_dim: 128,
            d_conv: 4,
            n_rot: 64,
            sections: [11, 11, 10, 0],
        }),
    },
];

/// Weight formats `synth --type` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynthType {
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output and for attn_v / ffn_down in half
    /// the layers (llama.cpp's `use_more_bits` rule; published files may pick other layers, the
    /// byte count is the same).
    Q4KM,
    Q8_0,
    F16,
}

impl SynthType {
    pub fn parse(s: &str) -> Option<SynthType> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(SynthType::Q4KM),
            "q8_0" => Some(SynthType::Q8_0),
            "f16" => Some(SynthType::F16),
            _ => None,
        }
    }
}

/// llama.cpp's `use_more_bits`: the layers whose attn_v / ffn_down get Q6_K in Q4_K_M.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Random bytes of a tensor of `n` elements in type `ty`, with each block's scale set so the
/// weights stay small (|w| below ~0.1), as trained weights are.
fn random_weights(ty: Type, n: u64, rng: &mut Rng) -> Vec<u8> {
    let blk = ty.block_size();
    let bytes = (n / blk * ty.block_bytes()) as usize;
    let mut data = vec![0u8; bytes];
    for chunk in data.chunks_mut(8) {
        let x = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let bb = ty.block_bytes() as usize;
    if ty == Type::Q4_K {
        // block_q4_K: d, dmin (f16), scales[12], qs[128]; w = d*sc*q - dmin*m with q in 0..15.
        // Every packed scale byte 0x22 gives sc == m in all 8 sub-blocks (34 or 2), and
        // dmin = 7.5 d then makes w = d*sc*(q - 7.5): zero-mean, like trained weights. (Random
        // scales would give every matrix a positive mean, and the residual stream would grow
        // without bound through the layers.)
        for b in data.chunks_mut(bb) {
            b[0..2].copy_from_slice(&f16(8e-5));
            b[2..4].copy_from_slice(&f16(6e-4));
            b[4..16].fill(0x22);
        }
    } else if ty == Type::Q6_K {
        // block_q6_K: ql[128], qh[64], scales[16] (i8), d (f16)
        for b in data.chunks_mut(bb) {
            b[208..210].copy_from_slice(&f16(1e-5));
        }
    } else if ty == Type::Q8_0 {
        // block_q8_0: d (f16), qs[32] (i8)
        for b in data.chunks_mut(bb) {
            b[0..2].copy_from_slice(&f16(3e-4));
        }
    } else if ty == Type::F16 {
        for v in data.chunks_mut(2) {
            let r = rng.next_f32() * 0.04;
            v.copy_from_slice(&f16(r));
        }
    }
    data
}

/// A byte-level BPE vocabulary of `n` tokens: the 256 byte tokens, one merge, then control
/// tokens. Enough to tokenize any text (byte by byte) and to run; not a real tokenizer.
fn synthetic_vocab(n: usize) -> Vec<(String, Value)> {
    // GPT-2's byte-to-unicode map: printable bytes map to themselves, the rest to U+0100...
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut extra = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut tokens: Vec<Value> = chars
        .iter()
        .map(|&c| Value::Str(char::from_u32(c).unwrap_or('?').to_string()))
        .collect();
    // One merge (two spaces), so the merges list is a non-empty string array.
    tokens.push(Value::Str("\u{120}\u{120}".into()));
    let mut types: Vec<Value> = vec![Value::I32(1); tokens.len()];
    for i in tokens.len()..n {
        tokens.push(Value::Str(format!("<|synthetic_{i}|>")));
        types.push(Value::I32(3));
    }
    vec![
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![Value::Str("\u{120} \u{120}".into())]),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(n as u32 - 1),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ]
}

/// Write a random-weight target GGUF with the real shapes of `shape` and the tensor types of
/// `ty` (timing only: the metadata says so). `n_layer` overrides the layer count (small test
/// models); `tokenizer` copies `tokenizer.*` metadata from a model with the same vocabulary
/// size, otherwise a synthetic byte-level vocabulary is written.
pub fn write_synthetic_target(
    path: &Path,
    shape: &TargetShape,
    ty: SynthType,
    n_layer: Option<usize>,
    tokenizer: Option<&crate::format::gguf::Gguf>,
    seed: u64,
) -> anyhow::Result<()> {
    let s = shape;
    let a = s.arch;
    let nl = n_layer.unwrap_or(s.n_layer);
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(a.into())),
        (
            "general.name".into(),
            Value::Str(format!("synthetic {} ({ty:?})", s.name)),
        ),
        (
            "general.description".into(),
            Value::Str(
                "blockspec synth: random weights with real shapes, for timing only; it produces no useful text"
                    .into(),
            ),
        ),
        (format!("{a}.block_count"), Value::U32(nl as u32)),
        (format!("{a}.context_length"), Value::U32(s.n_ctx as u32)),
        (format!("{a}.embedding_length"), Value::U32(s.n_embd as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(s.n_ff as u32)),
        (format!("{a}.attention.head_count"), Value::U32(s.n_head as u32)),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(s.n_head_kv as u32),
        ),
        (format!("{a}.attention.key_length"), Value::U32(s.head_dim as u32)),
        (
            format!("{a}.attention.value_length"),
            Value::U32(s.head_dim as u32),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(s.rope_theta)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
    ];
    if let Some(m) = &s.moe {
        kv.push((format!("{a}.expert_count"), Value::U32(m.n_expert as u32)));
        kv.push((
            format!("{a}.expert_used_count"),
            Value::U32(m.n_used as u32),
        ));
        kv.push((
            format!("{a}.expert_feed_forward_length"),
            Value::U32(m.n_ff_exp as u32),
        ));
        if m.n_ff_shexp > 0 {
            kv.push((
                format!("{a}.expert_shared_feed_forward_length"),
                Value::U32(m.n_ff_shexp as u32),
            ));
        }
    }
    if let Some(h) = &s.hybrid {
        let u = |x: usize| Value::U32(x as u32);
        kv.extend([
            (format!("{a}.ssm.conv_kernel"), u(h.d_conv)),
            (format!("{a}.ssm.state_size"), u(h.head_dim)),
            (format!("{a}.ssm.group_count"), u(h.n_k_heads)),
            (format!("{a}.ssm.time_step_rank"), u(h.n_v_heads)),
            (format!("{a}.ssm.inner_size"), u(h.head_dim * h.n_v_heads)),
            (format!("{a}.full_attention_interval"), u(h.full_every)),
            (format!("{a}.rope.dimension_count"), u(h.n_rot)),
            (
                format!("{a}.rope.dimension_sections"),
                Value::Array(h.sections.iter().map(|&x| Value::I32(x)).collect()),
            ),
            (
                format!("{a}.attention.recurrent_layers"),
                Value::Array(
                    (0..nl)
                        .map(|i| Value::Bool((i + 1) % h.full_every != 0))
                        .collect(),
                ),
            ),
        ]);
    }
    match tokenizer {
        Some(g) => {
            let n = g
                .str_array("tokenizer.ggml.tokens")?
                .map(|t| t.len())
                .unwrap_or(0);
            if n != s.n_vocab {
                anyhow::bail!(
                    "--tokenizer-from {}: {n} tokens, {} has {}",
                    g.path().display(),
                    s.name,
                    s.n_vocab
                );
            }
            for k in g.keys().iter().filter(|k| k.starts_with("tokenizer.")) {
                kv.push((k.clone(), g.get(k).expect("listed key").clone()));
            }
        }
        None => kv.extend(synthetic_vocab(s.n_vocab)),
    }
    let mut rng = Rng(seed.max(1).wrapping_mul(0x9E3779B97F4A7C15) | 1);
    let (e, nv, ff) = (s.n_embd as u64, s.n_vocab as u64, s.n_ff as u64);
    let (eq, ekv) = (
        (s.head_dim * s.n_head) as u64,
        (s.head_dim * s.n_head_kv) as u64,
    );
    let base = match ty {
        SynthType::Q4KM => Type::Q4_K,
        SynthType::Q8_0 => Type::Q8_0,
        SynthType::F16 => Type::F16,
    };
    let more = match ty {
        SynthType::Q4KM => Type::Q6_K,
        _ => base,
    };
    let mut tensors = Vec::new();
    // Matrices get their random bytes later, in parallel (a 27B model is 16 GB): each from its
    // own seed, drawn here in order, so the file does not depend on the thread count.
    let mat = |name: String, ne: Vec<u64>, t: Type, rng: &mut Rng| TensorData {
        data: rng.next_u64().to_le_bytes().to_vec(),
        name,
        ne,
        ty: t,
    };
    tensors.push(mat("token_embd.weight".into(), vec![e, nv], base, &mut rng));
    tensors.push(ones("output_norm.weight".into(), e));
    if !s.tied {
        tensors.push(mat("output.weight".into(), vec![e, nv], more, &mut rng));
    }
    for il in 0..nl {
        let n = |x: &str| format!("blk.{il}.{x}");
        let v_ty = if use_more_bits(il, nl) { more } else { base };
        tensors.push(ones(n("attn_norm.weight"), e));
        match &s.hybrid {
            Some(h) if (il + 1) % h.full_every != 0 => {
                // Gated DeltaNet: small tensors stay f32, as llama.cpp quantizes them.
                let (hd, nk, nvh) = (h.head_dim as u64, h.n_k_heads as u64, h.n_v_heads as u64);
                let ch = hd * (2 * nk + nvh);
                tensors.push(mat(n("attn_qkv.weight"), vec![e, ch], more, &mut rng));
                tensors.push(mat(
                    n("attn_gate.weight"),
                    vec![e, hd * nvh],
                    base,
                    &mut rng,
                ));
                tensors.push(mat(n("ssm_beta.weight"), vec![e, nvh], base, &mut rng));
                tensors.push(mat(n("ssm_alpha.weight"), vec![e, nvh], base, &mut rng));
                let conv = (0..h.d_conv as u64 * ch).map(|_| rng.next_f32() * 0.5);
                tensors.push(f32s(
                    n("ssm_conv1d.weight"),
                    vec![h.d_conv as u64, ch],
                    conv,
                ));
                tensors.push(zeros(n("ssm_dt.bias"), nvh));
                let a = (0..nvh).map(|_| -(rng.next_f32() + 1.5).exp());
                tensors.push(f32s(n("ssm_a"), vec![nvh], a));
                tensors.push(ones(n("ssm_norm.weight"), hd));
                tensors.push(mat(n("ssm_out.weight"), vec![hd * nvh, e], v_ty, &mut rng));
            }
            _ => {
                // Hybrids' attention projects a query and an output gate per head.
                let q_rows = if s.hybrid.is_some() { 2 * eq } else { eq };
                tensors.push(mat(n("attn_q.weight"), vec![e, q_rows], base, &mut rng));
                tensors.push(mat(n("attn_k.weight"), vec![e, ekv], base, &mut rng));
                tensors.push(mat(n("attn_v.weight"), vec![e, ekv], v_ty, &mut rng));
                if s.qkv_bias {
                    tensors.push(zeros(n("attn_q.bias"), eq));
                    tensors.push(zeros(n("attn_k.bias"), ekv));
                    tensors.push(zeros(n("attn_v.bias"), ekv));
                }
                if s.qk_norm {
                    tensors.push(ones(n("attn_q_norm.weight"), s.head_dim as u64));
                    tensors.push(ones(n("attn_k_norm.weight"), s.head_dim as u64));
                }
                tensors.push(mat(n("attn_output.weight"), vec![eq, e], base, &mut rng));
            }
        }
        let ffn_norm = if s.hybrid.is_some() {
            "post_attention_norm.weight"
        } else {
            "ffn_norm.weight"
        };
        tensors.push(ones(n(ffn_norm), e));
        match &s.moe {
            None => {
                tensors.push(mat(n("ffn_gate.weight"), vec![e, ff], base, &mut rng));
                tensors.push(mat(n("ffn_up.weight"), vec![e, ff], base, &mut rng));
                tensors.push(mat(n("ffn_down.weight"), vec![ff, e], v_ty, &mut rng));
            }
            Some(m) => {
                let (ne, fe) = (m.n_expert as u64, m.n_ff_exp as u64);
                // The router stays f32 (llama.cpp never quantizes ffn_gate_inp).
                let router = (0..e * ne).map(|_| rng.next_f32() * 0.05);
                tensors.push(f32s(n("ffn_gate_inp.weight"), vec![e, ne], router));
                tensors.push(mat(
                    n("ffn_gate_exps.weight"),
                    vec![e, fe, ne],
                    base,
                    &mut rng,
                ));
                tensors.push(mat(
                    n("ffn_up_exps.weight"),
                    vec![e, fe, ne],
                    base,
                    &mut rng,
                ));
                tensors.push(mat(
                    n("ffn_down_exps.weight"),
                    vec![fe, e, ne],
                    v_ty,
                    &mut rng,
                ));
                if m.n_ff_shexp > 0 {
                    let sf = m.n_ff_shexp as u64;
                    let g = (0..e).map(|_| rng.next_f32() * 0.05);
                    tensors.push(f32s(n("ffn_gate_inp_shexp.weight"), vec![e], g));
                    tensors.push(mat(n("ffn_gate_shexp.weight"), vec![e, sf], base, &mut rng));
                    tensors.push(mat(n("ffn_up_shexp.weight"), vec![e, sf], base, &mut rng));
                    tensors.push(mat(n("ffn_down_shexp.weight"), vec![sf, e], v_ty, &mut rng));
                }
            }
        }
    }
    fill_random_matrices(&mut tensors);
    let file = std::fs::File::create(path)?;
    let mut w = io::BufWriter::with_capacity(1 << 22, file);
    write_gguf(&mut w, &kv, &tensors)?;
    io::Write::flush(&mut w)?;
    Ok(())
}

/// Replace each matrix's 8-byte seed (see `write_synthetic_target`) by its random weights, on
/// all cores.
fn fill_random_matrices(tensors: &mut [TensorData]) {
    let pending: Vec<&mut TensorData> = tensors
        .iter_mut()
        .filter(|t| t.ty != Type::F32 && t.data.len() == 8)
        .collect();
    let n_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = pending.len().div_ceil(n_threads).max(1);
    let mut groups: Vec<Vec<&mut TensorData>> = Vec::new();
    for t in pending {
        match groups.last_mut() {
            Some(g) if g.len() < per => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    std::thread::scope(|sc| {
        for g in groups {
            sc.spawn(move || {
                for t in g {
                    let seed = u64::from_le_bytes(t.data[..8].try_into().expect("8 bytes"));
                    t.data = random_weights(t.ty, t.ne.iter().product(), &mut Rng(seed | 1));
                }
            });
        }
    });
}

/// An f32 tensor of shape `ne` with the given values.
fn f32s(name: String, ne: Vec<u64>, values: impl Iterator<Item = f32>) -> TensorData {
    TensorData {
        name,
        ne,
        ty: Type::F32,
        data: values.flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn zeros(name: String, n: u64) -> TensorData {
    TensorData {
        name,
        ne: vec![n],
        ty: Type::F32,
        data: vec![0u8; n as usize * 4],
    }
}
