//! Text <-> token ids, built from a GGUF's `tokenizer.ggml.*` metadata so that it gives exactly
//! what llama.cpp (`src/llama-vocab.cpp`) gives.
//!
//! Supported: byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`) with the
//! pre-tokenizers listed in [`PRE_TOKENIZERS`]. The BPE merges and the byte-level mapping run in
//! the `tokenizers` crate (Oniguruma regexes); everything llama.cpp does around them is done here
//! the way llama.cpp does it:
//!
//! * **special tokens** (token type CONTROL, USER_DEFINED, UNKNOWN, plus the tokens llama.cpp
//!   promotes to CONTROL by their text, e.g. `</s>`, `<|im_end|>`, `<|fim_prefix|>`) are cut out
//!   of the text before BPE by llama.cpp's `tokenizer_st_partition` algorithm: longest token
//!   first, each one split out of every remaining text fragment, left to right. With
//!   `parse_special = false` CONTROL and UNKNOWN tokens are not matched (they are plain text),
//!   USER_DEFINED tokens still are (as in llama.cpp and HF `tokenizers`).
//! * **BOS/EOS** are added per `tokenizer.ggml.add_bos_token` / `add_eos_token` (defaults per
//!   pre-tokenizer as in llama.cpp: only the llama3 family adds BOS).
//! * **end of generation** ids are computed by llama.cpp's rules (eos, eot, eom, fim pad/rep/sep
//!   and every token whose text is in llama.cpp's EOG list).
//! * **detokenizing** uses llama.cpp's `token_to_piece` (control tokens render as their text when
//!   special tokens are kept) and its `clean_up_tokenization_spaces` passes where the
//!   pre-tokenizer enables them.
//! * **Unicode version**: the regexes use llama.cpp's (adapted) pre-tokenizer expressions, with
//!   the code points that Unicode 16.0 added to `\p{L}`/`\p{N}`/`\p{P}`/`\p{M}`/`\p{S}` removed
//!   from those classes, since llama.cpp's tables are Unicode 15.1 (Oniguruma's are 16.0).
//!   Checked against llama.cpp over every code point in several contexts.
//!
//! Remaining, theoretical differences: where a vocabulary has several special tokens of equal
//! length that overlap in a text, or several candidates for an auto-detected EOT/EOM/FIM token,
//! llama.cpp's order is unspecified (`std::sort`, `unordered_map`); we use the lowest id.
//! SentencePiece (`"llama"`), WordPiece, Unigram and RWKV vocabularies are not supported.
//!
//! The parts: `pretokenize` (the `tokenizer.ggml.pre` regexes and flags), `special` (special
//! token ids and the texts that mark them), `vocab` (what llama.cpp derives from the vocabulary
//! metadata), `bpe` (the `tokenizers` BPE model), `tokenize` (text to ids), `detokenize` (ids to
//! text) and `stream` ([`StreamDecoder`], streaming text output).

mod bpe;
mod detokenize;
mod pretokenize;
mod special;
mod stream;
mod tokenize;
mod vocab;

pub use pretokenize::PRE_TOKENIZERS;
pub use special::SpecialIds;
pub use stream::StreamDecoder;
pub use vocab::ChatTokens;

use crate::format::gguf::Gguf;
use anyhow::{anyhow, Context, Result};
use bpe::build_bpe;
use detokenize::{byte_level_tables, piece_into};
use std::collections::BTreeSet;
use vocab::{model_and_pre, VocabMeta};

/// llama.cpp's `llama_token_attr` bits.
pub mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const NORMALIZED: u32 = 1 << 6;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
    pub const SINGLE_WORD: u32 = 1 << 9;
}

/// A tokenizer for one model's vocabulary.
pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    tokens: Vec<String>,
    attrs: Vec<u32>,
    /// `token_to_piece(id, special = true)` of every token, concatenated; `piece_off[id]..piece_off[id+1]`.
    piece_data: Vec<u8>,
    piece_off: Vec<usize>,
    /// Tokens matched in the text before BPE, longest text first.
    special_cache: Vec<u32>,
    special: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    model: String,
    pre: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.model)
            .field("pre", &self.pre)
            .field("n_vocab", &self.tokens.len())
            .field("special", &self.special)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

impl Tokenizer {
    /// Build the tokenizer from a GGUF's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let path = g.path().display().to_string();
        Self::build(g).with_context(|| format!("{path}: cannot build the tokenizer"))
    }

    fn build(g: &Gguf) -> Result<Tokenizer> {
        // Fail early (before any work) on an unsupported model or pre-tokenizer.
        let (_, _, cfg) = model_and_pre(g)?;
        let raw_tokens = g
            .str_array("tokenizer.ggml.tokens")?
            .ok_or_else(|| anyhow!("missing metadata key tokenizer.ggml.tokens"))?;
        let merges = g
            .str_array("tokenizer.ggml.merges")?
            .ok_or_else(|| anyhow!("missing metadata key tokenizer.ggml.merges (BPE merges)"))?;
        // The BPE model (the slow part) builds on a second thread meanwhile.
        let (m, bpe) = std::thread::scope(|s| {
            let bpe = s.spawn(|| build_bpe(&raw_tokens, &merges, &cfg));
            let m = VocabMeta::from_gguf(g);
            let bpe = bpe
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the BPE builder thread panicked")));
            (m, bpe)
        });
        let (m, bpe) = (m?, bpe?);
        let (_, from_char) = byte_level_tables();
        let n = m.tokens.len();
        let mut piece_data = Vec::with_capacity(n * 6);
        let mut piece_off = Vec::with_capacity(n + 1);
        for (t, &a) in m.tokens.iter().zip(&m.attrs) {
            piece_off.push(piece_data.len());
            piece_into(t, a, &from_char, &mut piece_data);
        }
        piece_off.push(piece_data.len());
        Ok(Tokenizer {
            bpe,
            tokens: m.tokens,
            attrs: m.attrs,
            piece_data,
            piece_off,
            special_cache: m.special_cache,
            special: m.special,
            eog: m.eog,
            add_bos: m.add_bos,
            add_eos: m.add_eos,
            add_space_prefix: m.add_space_prefix,
            clean_spaces: m.cfg.clean_spaces,
            model: m.model,
            pre: m.pre,
        })
    }
}

impl Tokenizer {
    /// The raw bytes of one token, as llama.cpp's `token_to_piece(id, special = true)` gives them
    /// (control tokens as their text; empty for an id out of range).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.piece(id, true).to_vec()
    }

    /// The token's text as stored in the vocabulary (byte-level encoded for normal tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// llama.cpp token attributes (see [`attr`]).
    pub fn token_attr(&self, id: u32) -> u32 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// A control token (rendered only when special tokens are kept).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_attr(id) & attr::CONTROL != 0
    }

    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }

    pub fn special_ids(&self) -> &SpecialIds {
        &self.special
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS / appends EOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// End of generation (llama.cpp's `llama_vocab_is_eog`).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    /// The id of the token whose vocabulary text is exactly `s` (e.g. `"<|im_end|>"`).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.bpe.token_to_id(s)
    }

    /// `tokenizer.ggml.pre` ("" when absent).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre
    }
}
