//! The vocabulary metadata (`tokenizer.ggml.*`) read as llama.cpp reads it: tokens and their
//! attributes, special ids, the end-of-generation set, BOS/EOS flags; and the part of it a chat
//! template needs ([`ChatTokens`]).

use super::attr;
use super::detokenize::{byte_level_tables, piece_into};
use super::pretokenize::{pre_config, PreConfig, PRE_TOKENIZERS};
use super::special::{
    SpecialIds, EOG_TEXTS, EOM_TEXTS, EOT_TEXTS, FIM_MID_TEXTS, FIM_PAD_TEXTS, FIM_PRE_TEXTS,
    FIM_REP_TEXTS, FIM_SEP_TEXTS, FIM_SUF_TEXTS,
};
use crate::format::gguf::{Gguf, Value};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`) -> attributes.
fn attr_from_token_type(t: i64) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // UNDEFINED (0) and anything unknown
    }
}

/// Everything llama.cpp derives from the vocabulary metadata, short of the BPE model.
pub(super) struct VocabMeta {
    pub(super) tokens: Vec<String>,
    pub(super) attrs: Vec<u32>,
    pub(super) special_cache: Vec<u32>,
    pub(super) special: SpecialIds,
    pub(super) eog: BTreeSet<u32>,
    pub(super) add_bos: bool,
    pub(super) add_eos: bool,
    pub(super) add_space_prefix: bool,
    pub(super) cfg: PreConfig,
    pub(super) model: String,
    pub(super) pre: String,
}

impl VocabMeta {
    /// Read and derive it all from the GGUF's metadata (llama.cpp's `llama_vocab::impl::load`).
    pub(super) fn from_gguf(g: &Gguf) -> Result<VocabMeta> {
        let (model, pre_name, cfg) = model_and_pre(g)?;

        // Vocabulary and token attributes.
        let raw_tokens = g
            .str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| anyhow!("missing metadata key tokenizer.ggml.tokens"))?;
        let n = raw_tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            bail!("tokenizer.ggml.tokens has {n} entries");
        }
        let tokens: Vec<String> = raw_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    (*t).to_string()
                }
            })
            .collect();
        let mut attrs = vec![attr::NORMAL; n];
        if let Some(types) = g.int_array("tokenizer.ggml.token_type")? {
            if types.len() < n {
                bail!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    types.len()
                );
            }
            for (a, &t) in attrs.iter_mut().zip(&types) {
                *a = attr_from_token_type(t);
            }
        }
        // Special token ids: the gpt2 defaults, then the metadata.
        let in_vocab = |id: u32| (id as usize) < n;
        let mut sp = SpecialIds {
            bos: Some(11).filter(|&i| in_vocab(i) && !cfg.no_bos),
            eos: Some(11).filter(|&i| in_vocab(i)),
            ..SpecialIds::default()
        };
        let read_id = |key: &str, slot: &mut Option<u32>| {
            let Some(v) = g.get(key) else { return };
            match v.as_i64() {
                Some(id) if (0..n as i64).contains(&id) => *slot = Some(id as u32),
                _ => tracing::warn!(
                    "bad special token {key} = {v:?} (vocabulary of {n}), using {slot:?}"
                ),
            }
        };
        read_id("tokenizer.ggml.bos_token_id", &mut sp.bos);
        read_id("tokenizer.ggml.eos_token_id", &mut sp.eos);
        read_id("tokenizer.ggml.eot_token_id", &mut sp.eot);
        read_id("tokenizer.ggml.eom_token_id", &mut sp.eom);
        read_id("tokenizer.ggml.unknown_token_id", &mut sp.unk);
        read_id("tokenizer.ggml.seperator_token_id", &mut sp.sep);
        read_id("tokenizer.ggml.padding_token_id", &mut sp.pad);
        read_id("tokenizer.ggml.mask_token_id", &mut sp.mask);
        read_id("tokenizer.ggml.fim_pre_token_id", &mut sp.fim_pre);
        read_id("tokenizer.ggml.fim_suf_token_id", &mut sp.fim_suf);
        read_id("tokenizer.ggml.fim_mid_token_id", &mut sp.fim_mid);
        read_id("tokenizer.ggml.fim_pad_token_id", &mut sp.fim_pad);
        read_id("tokenizer.ggml.fim_rep_token_id", &mut sp.fim_rep);
        read_id("tokenizer.ggml.fim_sep_token_id", &mut sp.fim_sep);
        // deprecated names
        read_id("tokenizer.ggml.prefix_token_id", &mut sp.fim_pre);
        read_id("tokenizer.ggml.suffix_token_id", &mut sp.fim_suf);
        read_id("tokenizer.ggml.middle_token_id", &mut sp.fim_mid);
        let meta_bool = |key: &str| g.get(key).and_then(Value::as_bool);
        let add_bos = meta_bool("tokenizer.ggml.add_bos_token").unwrap_or(cfg.add_bos);
        let add_eos = meta_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);
        let add_space_prefix = meta_bool("tokenizer.ggml.add_space_prefix").unwrap_or(false);

        // Auto-detection of special tokens by their text. llama.cpp iterates an unordered_map here;
        // where several candidates of one kind exist we take the lowest id.
        let find_text = |texts: &[&str]| -> Option<u32> {
            tokens
                .iter()
                .position(|t| texts.contains(&t.as_str()))
                .map(|i| i as u32)
        };
        for (slot, texts) in [
            (&mut sp.eot, EOT_TEXTS),
            (&mut sp.eom, EOM_TEXTS),
            (&mut sp.fim_pre, FIM_PRE_TEXTS),
            (&mut sp.fim_suf, FIM_SUF_TEXTS),
            (&mut sp.fim_mid, FIM_MID_TEXTS),
            (&mut sp.fim_pad, FIM_PAD_TEXTS),
            (&mut sp.fim_rep, FIM_REP_TEXTS),
            (&mut sp.fim_sep, FIM_SEP_TEXTS),
        ] {
            if slot.is_none() {
                if let Some(id) = find_text(texts) {
                    *slot = Some(id);
                    attrs[id as usize] |= attr::CONTROL;
                }
            }
        }
        // Control tokens with "unused" in their text are unused.
        for (t, a) in tokens.iter().zip(attrs.iter_mut()) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        // End-of-generation set.
        let mut eog = BTreeSet::new();
        eog.extend(sp.fim_pad);
        eog.extend(sp.fim_rep);
        eog.extend(sp.fim_sep);
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                eog.insert(i as u32);
                attrs[i] |= attr::CONTROL;
            }
        }
        // gpt-oss: these always render.
        for (i, t) in tokens.iter().enumerate() {
            if matches!(
                t.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                attrs[i] = attr::USER_DEFINED;
            }
        }
        eog.extend(sp.eos);
        eog.extend(sp.eot);
        eog.extend(sp.eom);
        let has = |eog: &BTreeSet<u32>, text: &str| {
            eog.iter().find(|&&i| tokens[i as usize] == text).copied()
        };
        // o200k_harmony / solar-open: "<|end|>" is not EOG when "<|return|>" and "<|call|>" (or
        // "<|calls|>" and "<|flush|>") are.
        if let Some(end_id) = has(&eog, "<|end|>") {
            let call = has(&eog, "<|call|>").is_some() || has(&eog, "<|calls|>").is_some();
            let ret = has(&eog, "<|return|>").is_some();
            let flush = has(&eog, "<|flush|>").is_some();
            if call && (ret || flush) {
                eog.remove(&end_id);
                attrs[end_id as usize] = attr::USER_DEFINED;
            }
        }
        // gemma4 and plamo have a normal "</s>".
        if let Some(s_id) = has(&eog, "</s>") {
            if has(&eog, "<|tool_response>").is_some() || has(&eog, "<|plamo:eos|>").is_some() {
                eog.remove(&s_id);
                attrs[s_id as usize] = attr::NORMAL;
            }
        }

        // Tokens matched in the text, longest first (llama.cpp's std::sort leaves ties unordered;
        // we keep them by id).
        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_cache.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()));

        // Per-model attribute fixes (llama.cpp: "Handle per token attributes").
        let model_name = g
            .get("general.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        let arch = g
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("");
        let set_attr = |attrs: &mut [u32], text: &str, a: u32, on: bool| {
            if let Some(id) = tokens.iter().position(|t| t == text) {
                if on {
                    attrs[id] |= a;
                } else {
                    attrs[id] &= !a;
                }
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"]
            .iter()
            .any(|s| pre_name.contains(s))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|s| arch.contains(s))
        {
            set_attr(&mut attrs, "<mask>", attr::LSTRIP, true);
        } else if model_name.contains("phi-3") || model_name.contains("phi3") {
            for &id in &special_cache {
                attrs[id as usize] |= attr::RSTRIP;
            }
            set_attr(&mut attrs, "</s>", attr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set_attr(&mut attrs, t, attr::RSTRIP, false);
            }
        } else if model_name.contains("modern-bert") {
            set_attr(&mut attrs, "[MASK]", attr::LSTRIP, true);
        }

        Ok(VocabMeta {
            tokens,
            attrs,
            special_cache,
            special: sp,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            cfg,
            model,
            pre: pre_name,
        })
    }
}

/// `tokenizer.ggml.model` and `tokenizer.ggml.pre`, checked to be supported.
pub(super) fn model_and_pre(g: &Gguf) -> Result<(String, String, PreConfig)> {
    let model = g
        .get("tokenizer.ggml.model")
        .ok_or_else(|| anyhow!("missing metadata key tokenizer.ggml.model"))?
        .as_str()
        .ok_or_else(|| anyhow!("metadata tokenizer.ggml.model is not a string"))?
        .to_string();
    match model.as_str() {
        "gpt2" => {}
        "llama" => bail!(
            "SentencePiece vocabularies (tokenizer.ggml.model = \"llama\") are not supported \
             yet; only byte-level BPE (\"gpt2\") is"
        ),
        "bert" | "t5" | "rwkv" | "plamo2" | "gemma4" | "hybriddna" | "whitespace" | "no_vocab"
        | "none" | "test" => bail!(
            "tokenizer.ggml.model = \"{model}\" is not supported yet; only byte-level BPE \
             (\"gpt2\") is"
        ),
        other => bail!("unknown tokenizer.ggml.model \"{other}\" (supported: \"gpt2\")"),
    }
    let pre_name = g
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let cfg = pre_config(&pre_name).ok_or_else(|| {
        anyhow!(
            "pre-tokenizer tokenizer.ggml.pre = \"{pre_name}\" is not supported yet (supported: {})",
            PRE_TOKENIZERS.join(", ")
        )
    })?;
    Ok((model, pre_name, cfg))
}

/// What a chat template needs from the vocabulary: the BOS/EOS texts (llama.cpp's
/// `common_token_to_piece(bos/eos, special = true)`, empty when there is none) and whether
/// tokenizing adds them (then a rendered prompt's leading BOS / trailing EOS are removed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatTokens {
    pub bos: String,
    pub eos: String,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl ChatTokens {
    /// From the GGUF's vocabulary metadata, without building the BPE model.
    pub fn from_gguf(g: &Gguf) -> Result<ChatTokens> {
        let m = VocabMeta::from_gguf(g)
            .with_context(|| format!("{}: cannot read the vocabulary", g.path().display()))?;
        let (_, from_char) = byte_level_tables();
        let text = |id: Option<u32>| {
            let mut out = Vec::new();
            if let Some(id) = id {
                piece_into(
                    &m.tokens[id as usize],
                    m.attrs[id as usize],
                    &from_char,
                    &mut out,
                );
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        Ok(ChatTokens {
            bos: text(m.special.bos),
            eos: text(m.special.eos),
            add_bos: m.add_bos,
            add_eos: m.add_eos,
        })
    }
}
