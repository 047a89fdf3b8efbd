//! The BPE model with its pre-tokenizer, built in the `tokenizers` crate from the GGUF's tokens
//! and merges the way llama.cpp reads them.

use super::pretokenize::{llama_unicode_regex, PreConfig};
use anyhow::{anyhow, bail, Result};
use std::collections::HashSet;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

/// A fast hasher for the (left id, right id) pairs of the merges.
#[derive(Default)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The `tokenizers` BPE model and pre-tokenizer for these tokens and merges.
pub(super) fn build_bpe(
    raw_tokens: &[&str],
    merges: &[&str],
    cfg: &PreConfig,
) -> Result<tokenizers::Tokenizer> {
    let n = raw_tokens.len();
    let vocab: Vocab = raw_tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                (*t).to_string()
            };
            (t, i as u32)
        })
        .collect();
    if vocab.len() != n {
        bail!(
            "tokenizer.ggml.tokens contains duplicate token texts ({} distinct of {n})",
            vocab.len()
        );
    }
    // llama.cpp splits each merge at the first space after the first byte and keeps the first
    // rank of a repeated pair. HF requires both halves and the merged text in the vocabulary; a
    // merge that is not cannot produce a token llama.cpp would keep either, so it is dropped.
    let mut seen: HashSet<u64, std::hash::BuildHasherDefault<PairHasher>> =
        HashSet::with_capacity_and_hasher(merges.len(), Default::default());
    let mut pairs = Vec::with_capacity(merges.len());
    let mut dropped = 0usize;
    let mut joined = String::new();
    for m in merges {
        let Some(pos) = m
            .as_bytes()
            .iter()
            .skip(1)
            .position(|&b| b == b' ')
            .map(|p| p + 1)
        else {
            dropped += 1;
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        let (Some(&ia), Some(&ib)) = (vocab.get(a), vocab.get(b)) else {
            dropped += 1;
            continue;
        };
        if !seen.insert(u64::from(ia) << 32 | u64::from(ib)) {
            continue;
        }
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        if !vocab.contains_key(joined.as_str()) {
            dropped += 1;
            continue;
        }
        pairs.push((a.to_string(), b.to_string()));
    }
    if dropped > 0 {
        tracing::debug!(
            "tokenizer: {dropped} BPE merges dropped (malformed or not in the vocabulary)"
        );
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(cfg.ignore_merges)
        .build()
        .map_err(|e| anyhow!("cannot build the BPE model: {e}"))?;
    let mut seq: Vec<PreTokenizerWrapper> = Vec::with_capacity(cfg.regexes.len() + 1);
    for re in cfg.regexes {
        let split = Split::new(
            SplitPattern::Regex(llama_unicode_regex(re)),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("cannot compile the pre-tokenizer regex {re:?}: {e}"))?;
        seq.push(split.into());
    }
    seq.push(ByteLevel::new(false, false, false).into());
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(seq)));
    Ok(tok)
}
