//! `blockspec synth`: random-weight targets and DFlash drafters, for tests and timing.

use crate::session::load::open_gguf;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct SynthArgs {
    /// Write a random DFlash drafter (llama.cpp `dflash` GGUF) matching this target GGUF.
    #[arg(
        long = "dflash-for",
        required_unless_present = "like",
        conflicts_with = "like"
    )]
    dflash_for: Option<PathBuf>,
    /// Write a random-weight target with the shapes of: qwen3-8b, qwen3-4b, llama-3.1-8b,
    /// qwen2.5-1.5b, qwen3-30b-a3b (MoE), qwen3.5-27b (hybrid), qwen3.6-35b-a3b (hybrid MoE).
    #[arg(long = "like")]
    like: Option<String>,
    /// Weight types of a --like target: q4_k_m (llama.cpp's mix), q8_0, f16.
    #[arg(long = "type", default_value = "q4_k_m")]
    ty: String,
    /// Layers of a --like target (default: the real model's).
    #[arg(long = "layers")]
    layers: Option<usize>,
    /// Copy the tokenizer of this GGUF (same vocabulary size) into a --like target; default a
    /// synthetic byte-level vocabulary.
    #[arg(long = "tokenizer-from")]
    tokenizer_from: Option<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    #[arg(long = "draft-layers", default_value_t = 5)]
    draft_layers: usize,
    #[arg(long = "block-size", default_value_t = 16)]
    block_size: usize,
    /// Target layers to tap (comma-separated, 0-based; default: the reference rule for 5 taps).
    #[arg(long = "target-layers", value_delimiter = ',')]
    target_layers: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// `blockspec synth`: write a synthetic target (`--like`) or drafter (`--dflash-for`).
pub(super) fn cmd_synth(a: SynthArgs) -> Result<()> {
    if let Some(like) = &a.like {
        let names: Vec<&str> = crate::dev::synth::TARGET_SHAPES
            .iter()
            .map(|s| s.name)
            .collect();
        let Some(shape) = crate::dev::synth::TARGET_SHAPES
            .iter()
            .find(|s| s.name == like)
        else {
            bail!("--like {like:?}: expected one of {}", names.join(", "));
        };
        let Some(ty) = crate::dev::synth::SynthType::parse(&a.ty) else {
            bail!("--type {:?}: expected q4_k_m, q8_0 or f16", a.ty);
        };
        if a.layers == Some(0) {
            bail!("--layers must be at least 1");
        }
        let tok = match &a.tokenizer_from {
            Some(p) => Some(open_gguf(p).context("--tokenizer-from")?),
            None => None,
        };
        crate::dev::synth::write_synthetic_target(
            &a.output,
            shape,
            ty,
            a.layers,
            tok.as_ref(),
            a.seed,
        )
        .with_context(|| format!("cannot write {}", a.output.display()))?;
        eprintln!(
            "wrote synthetic {like} ({}) to {} (random weights, for timing only)",
            a.ty,
            a.output.display()
        );
        return Ok(());
    }
    let Some(target) = &a.dflash_for else {
        bail!("synth: give --like NAME (a target) or --dflash-for TARGET (a drafter)");
    };
    let g = open_gguf(target)?;
    let hp = crate::model::hparams_for(&g)?;
    if a.block_size < 2 {
        bail!("--block-size must be at least 2");
    }
    let taps = if a.target_layers.is_empty() {
        crate::decode::draft::dflash::default_target_layers(hp.n_layer, 5.min(hp.n_layer))
    } else {
        a.target_layers.clone()
    };
    if let Some(&bad) = taps.iter().find(|&&l| l >= hp.n_layer) {
        bail!(
            "--target-layers: layer {bad} out of range (the target has {} layers)",
            hp.n_layer
        );
    }
    // A token id that exists in the target's vocabulary (its last), as the mask token.
    let mask = (hp.n_vocab - 1) as u32;
    let spec = crate::dev::synth::DraftSpec {
        n_layer: a.draft_layers,
        block_size: a.block_size,
        target_layers: taps,
        mask_token_id: mask,
        seed: a.seed,
        scale: 0.02,
    };
    let tokenizer_kv = g
        .keys()
        .iter()
        .filter(|k| k.starts_with("tokenizer."))
        .map(|k| (k.clone(), g.get(k).expect("listed key").clone()))
        .collect();
    crate::dev::synth::write_random_dflash_with(&a.output, &hp, &spec, tokenizer_kv)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    eprintln!(
        "wrote random DFlash drafter {} (synthetic, for timing and tests only)",
        a.output.display()
    );
    Ok(())
}
