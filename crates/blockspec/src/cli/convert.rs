//! `blockspec convert-draft`: a DFlash drafter to llama.cpp's (or blockspec's) GGUF spelling.

use crate::format::gguf::Gguf;
use crate::session::load::open_gguf;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct ConvertDraftArgs {
    /// The drafter: a z-lab directory (config.json + safetensors) or a DFlash GGUF (llama.cpp,
    /// Luce or BeeLlama spelling).
    input: PathBuf,
    /// Output GGUF file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// `llama`: llama.cpp's `dflash` GGUF, with the target's tokenizer copied in (llama.cpp loads
    /// a drafter only with it; give --target unless the input GGUF has it). `blockspec`: the same
    /// tensors and keys, tokenizer optional (blockspec takes it from the target).
    #[arg(long, default_value = "llama")]
    spelling: String,
    /// Matrix type: f16, bf16, f32, q8_0, q4_0, or `keep` (as stored). Norms are always f32.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// The target GGUF: its tokenizer.* keys are copied in, and its layer count gives the default
    /// taps of a z-lab config that lists none.
    #[arg(long)]
    target: Option<PathBuf>,
    /// general.name of the output.
    #[arg(long, default_value = "DFlash drafter")]
    name: String,
}

/// `blockspec convert-draft`: check the flags, convert, report what was written.
pub(super) fn cmd_convert_draft(a: ConvertDraftArgs) -> Result<()> {
    use crate::decode::draft::dflash::{convert_draft, ConvertOptions};
    let llama = match a.spelling.as_str() {
        "llama" | "llama.cpp" => true,
        "blockspec" => false,
        other => bail!("--spelling {other:?}: expected llama or blockspec"),
    };
    let ty = match a.ty.to_ascii_lowercase().as_str() {
        "keep" => None,
        name => match ggml::Type::parse(name) {
            Some(t)
                if [
                    ggml::Type::F32,
                    ggml::Type::F16,
                    ggml::Type::BF16,
                    ggml::Type::Q8_0,
                    ggml::Type::Q4_0,
                ]
                .contains(&t) =>
            {
                Some(t)
            }
            _ => bail!(
                "--type {:?}: expected f16, bf16, f32, q8_0, q4_0 or keep",
                a.ty
            ),
        },
    };
    if !a.input.exists() {
        bail!("drafter not found: {}", a.input.display());
    }
    let tok_kv = |g: &Gguf| -> Vec<(String, crate::format::gguf::Value)> {
        g.keys()
            .iter()
            .filter(|k| k.starts_with("tokenizer."))
            .map(|k| (k.clone(), g.get(k).expect("listed key").clone()))
            .collect()
    };
    let (extra, target_n_layer) = match &a.target {
        Some(t) => {
            let g = open_gguf(t).context("--target")?;
            let hp = crate::model::hparams_for(&g)?;
            (tok_kv(&g), Some(hp.n_layer))
        }
        None if a.input.is_file() => (tok_kv(&open_gguf(&a.input)?), None),
        None => (Vec::new(), None),
    };
    if llama && !extra.iter().any(|(k, _)| k == "tokenizer.ggml.tokens") {
        bail!(
            "--spelling llama: llama.cpp loads a dflash drafter only with its target's tokenizer; give --target TARGET.gguf (or --spelling blockspec)"
        );
    }
    let r = convert_draft(
        &a.input,
        &a.output,
        &ConvertOptions {
            ty,
            extra,
            name: a.name.clone(),
            target_n_layer,
        },
    )?;
    if let Some(t) = &a.target {
        let g = open_gguf(t)?;
        let target = crate::model::hparams_for(&g)?;
        if r.cfg.n_embd != target.n_embd {
            eprintln!(
                "warning: drafter hidden size {} differs from the target's {}",
                r.cfg.n_embd, target.n_embd
            );
        }
    }
    eprintln!(
        "wrote {} ({} tensors, {:.1} MiB, {}): {} layers, hidden {}, block {}, target layers {:?}, mask token {}",
        a.output.display(),
        r.n_tensors,
        r.bytes as f64 / 1048576.0,
        a.ty,
        r.cfg.n_layer,
        r.cfg.n_embd,
        r.cfg.block_size,
        r.cfg.target_layer_ids,
        r.cfg.mask_token_id
    );
    Ok(())
}
