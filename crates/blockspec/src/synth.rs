//! Synthetic random-weight models, for tests and timing. Their metadata says so
//! (`general.description`); they are never meant to produce useful text.

use crate::gguf::Value;
use crate::gguf_write::{write_gguf, TensorData};
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
    fn next_f32(&mut self) -> f32 {
        // xorshift64*, then a uniform in [-1, 1)
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
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
    let a = "dflash";
    let e = hp.n_embd as u64;
    let (hd, nh, nkv, ff) = (
        hp.head_dim as u64,
        hp.n_head as u64,
        hp.n_head_kv as u64,
        hp.n_ff as u64,
    );
    let kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(a.into())),
        (
            "general.name".into(),
            Value::Str("random DFlash drafter".into()),
        ),
        (
            "general.description".into(),
            Value::Str(
                "SYNTHETIC random weights made by blockspec, for tests and timing only".into(),
            ),
        ),
        (format!("{a}.block_count"), Value::U32(spec.n_layer as u32)),
        (
            format!("{a}.context_length"),
            Value::U32(hp.n_ctx_train as u32),
        ),
        (format!("{a}.embedding_length"), Value::U32(e as u32)),
        (format!("{a}.feed_forward_length"), Value::U32(ff as u32)),
        (format!("{a}.attention.head_count"), Value::U32(nh as u32)),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(nkv as u32),
        ),
        (format!("{a}.attention.key_length"), Value::U32(hd as u32)),
        (format!("{a}.attention.value_length"), Value::U32(hd as u32)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(hp.rms_eps),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(hp.rope.freq_base)),
        (
            format!("{a}.block_size"),
            Value::U32(spec.block_size as u32),
        ),
        (
            format!("{a}.target_layers"),
            Value::Array(
                spec.target_layers
                    .iter()
                    .map(|&l| Value::I32(l as i32 + 1))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.mask_token_id".into(),
            Value::U32(spec.mask_token_id),
        ),
    ];
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
    let mut f = io::BufWriter::new(std::fs::File::create(path)?);
    write_gguf(&mut f, &kv, &t)
}
