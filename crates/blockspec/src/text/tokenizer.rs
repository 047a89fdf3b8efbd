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

use crate::format::gguf::{Gguf, Value};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeSet, HashMap, HashSet};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

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

// The pre-tokenizer regexes, exactly as llama.cpp spells them in llm_tokenizer_bpe (the
// case-insensitive `(?i:'s|...)` groups already rewritten to explicit classes there).
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const RE_UFAKZEKA: &str =
    r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_MINICPM5: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Code points Unicode 16.0 assigned to the letter, number, punctuation, mark and symbol
/// categories. Oniguruma's tables are Unicode 16.0; llama.cpp's (`unicode-data.cpp`) are 15.1,
/// where these are unassigned (in none of `\p{L}`, `\p{N}`, `\p{P}`, `\p{M}`, `\p{S}`). They
/// are removed from the regex classes so that text splits exactly as in llama.cpp. (Computed by
/// comparing every code point's Oniguruma classes with llama.cpp's flags table; `\s` agrees.)
const NEW_IN_UNICODE_16: &str = concat!(
    r"\x{897}\x{1B4E}-\x{1B4F}\x{1B7F}\x{1C89}-\x{1C8A}\x{2427}-\x{2429}\x{31E4}-\x{31E5}",
    r"\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D40}-\x{10D65}\x{10D69}-",
    r"\x{10D85}\x{10D8E}-\x{10D8F}\x{10EC2}-\x{10EC4}\x{10EFC}\x{11380}-\x{11389}\x{1138B}",
    r"\x{1138E}\x{11390}-\x{113B5}\x{113B7}-\x{113C0}\x{113C2}\x{113C5}\x{113C7}-\x{113CA}",
    r"\x{113CC}-\x{113D5}\x{113D7}-\x{113D8}\x{113E1}-\x{113E2}\x{116D0}-\x{116E3}",
    r"\x{11BC0}-\x{11BE1}\x{11BF0}-\x{11BF9}\x{11F5A}\x{13460}-\x{143FA}\x{16100}-",
    r"\x{16139}\x{16D40}-\x{16D79}\x{18CFF}\x{1CC00}-\x{1CCF9}\x{1CD00}-\x{1CEB3}",
    r"\x{1E5D0}-\x{1E5FA}\x{1E5FF}\x{1F8B2}-\x{1F8BB}\x{1F8C0}-\x{1F8C1}\x{1FA89}\x{1FA8F}",
    r"\x{1FABE}\x{1FAC6}\x{1FADC}\x{1FADF}\x{1FAE9}\x{1FBCB}-\x{1FBEF}",
);

/// A llama.cpp pre-tokenizer regex with its Unicode categories restricted to llama.cpp's
/// Unicode version.
fn llama_unicode_regex(re: &str) -> String {
    let mut out = re.to_string();
    for cat in ["L", "N", "P", "M", "S"] {
        out = out.replace(
            &format!("\\p{{{cat}}}"),
            &format!("[\\p{{{cat}}}&&[^{NEW_IN_UNICODE_16}]]"),
        );
    }
    out
}

/// How one `tokenizer.ggml.pre` value tokenizes (llama.cpp's `llama_vocab::impl::load`).
struct PreConfig {
    regexes: &'static [&'static str],
    clean_spaces: bool,
    ignore_merges: bool,
    add_bos: bool,
    no_bos: bool,
}

const fn pre(regexes: &'static [&'static str], clean_spaces: bool) -> PreConfig {
    PreConfig {
        regexes,
        clean_spaces,
        ignore_merges: false,
        add_bos: false,
        no_bos: false,
    }
}

const DEFAULT_REGEXES: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    RE_GPT2,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];
const STARCODER_REGEXES: &[&str] = &[r"\p{N}", RE_GPT2];
const FALCON_REGEXES: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"];

/// The `tokenizer.ggml.pre` values this tokenizer supports (an empty/missing value means
/// llama.cpp's "default").
pub const PRE_TOKENIZERS: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "stablelm2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "exaone4",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "granite-docling",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "falcon",
    "seed-coder",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "ufakzeka",
    "minicpm5",
];

fn pre_config(pre_name: &str) -> Option<PreConfig> {
    Some(match pre_name {
        "" | "default" => pre(DEFAULT_REGEXES, true),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..pre(&[RE_LLAMA3], true)
        },
        "dbrx" | "smaug-bpe" => pre(&[RE_LLAMA3], true),
        "chatglm-bpe" => PreConfig {
            no_bos: true,
            ..pre(&[RE_LLAMA3], true)
        },
        "glm4" | "glm5" => PreConfig {
            no_bos: true,
            ignore_merges: true,
            ..pre(&[RE_LLAMA3], true)
        },
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open"
        | "grok-2" => pre(&[RE_QWEN2], false),
        "megrez" | "stablelm2" => pre(&[RE_QWEN2], true),
        "qwen35" => pre(&[RE_QWEN35], false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo" | "jais"
        | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => pre(&[RE_GPT2], true),
        "trillion" | "granite-docling" => pre(&[RE_GPT2], false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            pre(STARCODER_REGEXES, true)
        }
        "command-r" | "smollm" => pre(STARCODER_REGEXES, false),
        "falcon" => pre(FALCON_REGEXES, true),
        "seed-coder" => pre(&[RE_SEED_CODER], false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => pre(&[RE_BAILINGMOE], false),
        "ufakzeka" => pre(&[RE_UFAKZEKA], false),
        "minicpm5" => PreConfig {
            ignore_merges: true,
            ..pre(&[r"\p{N}{1,3}", RE_MINICPM5], true)
        },
        _ => return None,
    })
}

/// Texts llama.cpp treats as end-of-generation tokens (`special_eog_ids`), whatever their type.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// The special token ids of a vocabulary (None: the vocabulary has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A piece of the input: text still to be BPE-tokenized (a byte range), or a special token.
#[derive(Clone, Copy, Debug)]
enum Fragment {
    Text(usize, usize),
    Token(u32),
}

/// C `isspace` in the "C" locale, as llama.cpp's lstrip/rstrip use it.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// GPT-2 byte-level alphabet: byte -> char, and its inverse.
fn byte_level_tables() -> ([char; 256], HashMap<char, u8>) {
    let mut to_char = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let cp = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        to_char[b as usize] = char::from_u32(cp).unwrap_or('\u{fffd}');
    }
    let from_char = to_char
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect();
    (to_char, from_char)
}

/// llama.cpp's `llama_decode_text`: byte-level chars back to bytes.
fn byte_level_decode(text: &str, from_char: &HashMap<char, u8>, out: &mut Vec<u8>) {
    for c in text.chars() {
        match from_char.get(&c) {
            Some(&b) => out.push(b),
            None => {
                // llama.cpp writes this marker (with the whole token text) for unmappable chars.
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
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

/// Everything llama.cpp derives from the vocabulary metadata, short of the BPE model.
struct VocabMeta {
    tokens: Vec<String>,
    attrs: Vec<u32>,
    special_cache: Vec<u32>,
    special: SpecialIds,
    eog: BTreeSet<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    cfg: PreConfig,
    model: String,
    pre: String,
}

impl VocabMeta {
    fn from_gguf(g: &Gguf) -> Result<VocabMeta> {
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
fn model_and_pre(g: &Gguf) -> Result<(String, String, PreConfig)> {
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

/// llama.cpp's `token_to_piece(id, special = true)` for a BPE token with attributes `a`.
fn piece_into(text: &str, a: u32, from_char: &HashMap<char, u8>, out: &mut Vec<u8>) {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if a & attr::NORMAL != 0 {
        byte_level_decode(text, from_char, out);
    } else if a & attr::BYTE != 0 {
        // "<0xXX>"; strtol semantics: 0 when it does not parse.
        out.push(
            text.get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0),
        );
    }
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

impl Tokenizer {
    /// Text to token ids, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.push(
                self.special
                    .bos
                    .ok_or_else(|| anyhow!("the vocabulary asks for a BOS token but has none"))?,
            );
        }
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(off, len) => {
                    let piece = text.get(off..off + len).ok_or_else(|| {
                        anyhow!(
                            "internal error: text fragment {off}..{} is not on a char boundary",
                            off + len
                        )
                    })?;
                    let enc = self
                        .bpe
                        .encode_fast(piece, false)
                        .map_err(|e| anyhow!("BPE tokenization failed: {e}"))?;
                    out.extend_from_slice(enc.get_ids());
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.special
                    .eos
                    .ok_or_else(|| anyhow!("the vocabulary asks for an EOS token but has none"))?,
            );
        }
        Ok(out)
    }

    /// llama.cpp's `tokenizer_st_partition`: cut the special tokens out of the text.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let mut frags = Vec::new();
        if !text.is_empty() {
            frags.push(Fragment::Text(0, text.len()));
        }
        for &sid in &self.special_cache {
            let a = self.attrs[sid as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let tok = self.tokens[sid as usize].as_bytes();
            if !frags.iter().any(|f| matches!(f, Fragment::Text(..))) {
                break;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                let Fragment::Text(mut off, mut len) = f else {
                    next.push(f);
                    continue;
                };
                loop {
                    let Some(p) = find_bytes(&bytes[off..off + len], tok) else {
                        next.push(Fragment::Text(off, len));
                        break;
                    };
                    let m = off + p;
                    if m > off {
                        let mut left = m - off;
                        if a & attr::LSTRIP != 0 {
                            while left > 0 && c_isspace(bytes[off + left - 1]) {
                                left -= 1;
                            }
                        }
                        if left > 0 {
                            next.push(Fragment::Text(off, left));
                        }
                    }
                    next.push(Fragment::Token(sid));
                    let end = m + tok.len();
                    if end < off + len {
                        let mut r_off = end;
                        let mut r_len = off + len - end;
                        if a & attr::RSTRIP != 0 {
                            while r_len > 0 && c_isspace(bytes[r_off]) {
                                r_off += 1;
                                r_len -= 1;
                            }
                        }
                        if r_len == 0 {
                            break;
                        }
                        off = r_off;
                        len = r_len;
                    } else {
                        break;
                    }
                }
            }
            frags = next;
        }
        frags
    }

    /// Token ids to text, as llama.cpp's `llama_detokenize(remove_special = skip_special,
    /// unparse_special = !skip_special)`. Invalid UTF-8 (a multi-byte char cut between tokens,
    /// an id out of range) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if skip_special && self.add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), self.special.bos) {
                if first == bos {
                    remove_space = false;
                    ids = &ids[1..];
                }
            }
        }
        if skip_special && self.add_eos {
            if let (Some(&last), Some(eos)) = (ids.last(), self.special.eos) {
                if last == eos {
                    ids = &ids[..ids.len() - 1];
                }
            }
        }
        let mut text = Vec::new();
        for &id in ids {
            let piece = self.piece(id, !skip_special);
            let mut piece = piece;
            if remove_space {
                if let Some(rest) = piece.strip_prefix(b" ") {
                    piece = rest;
                }
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn piece(&self, id: u32, special: bool) -> &[u8] {
        let i = id as usize;
        if i >= self.tokens.len() {
            return b"";
        }
        if !special && self.attrs[i] & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return b"";
        }
        &self.piece_data[self.piece_off[i]..self.piece_off[i + 1]]
    }

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

fn build_bpe(
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

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// llama.cpp's `clean_up_tokenization_spaces` passes of `llama_detokenize`, in place, byte by
/// byte exactly as there.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // " ?", " !", " .", " ," -> drop the space
    let total1 = text.len();
    let mut total = usize::from(total1 > 0);
    for i in 1..total1 {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
    // " ' " -> "'"
    let total2 = text.len();
    let mut total = usize::from(total2 > 0);
    let mut i = 1;
    while i < total2 {
        let x = text[i];
        if x == b'\'' && i + 1 < total2 && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);
    // " 's", " 'm", " 're", " 've" -> drop the space
    let total3 = text.len();
    let mut total = usize::from(total3 > 0);
    for i in 1..total3 {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < total3 {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < total3 {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Turns token ids, one at a time, into text for streaming output: bytes of a multi-byte UTF-8
/// character split across tokens are held back until the character is complete; bytes that can
/// never form valid UTF-8 come out as U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    skip_special: bool,
}

impl StreamDecoder {
    /// A decoder that renders control tokens as their text (llama.cpp's `token_to_piece(..,
    /// special = true)`).
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// `skip_special`: control tokens produce no text (as in `decode(.., true)`).
    pub fn with_skip_special(skip_special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            skip_special,
        }
    }

    /// Add one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        let piece = tokenizer.piece(id, !self.skip_special);
        self.push_bytes(piece)
    }

    /// Add raw bytes; returns the text that is now complete (possibly empty).
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    start += valid;
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for more bytes.
                        None => break,
                        Some(bad) => {
                            out.push('\u{fffd}');
                            start += bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Bytes held back (an incomplete character).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// End of stream: whatever is still held back, as U+FFFD.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_decoder_holds_back_split_chars() {
        let mut d = StreamDecoder::new();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(d.push_bytes(b"a"), "a");
        assert_eq!(d.push_bytes(&euro[..1]), "");
        assert_eq!(d.push_bytes(&euro[1..2]), "");
        assert_eq!(d.pending(), &euro[..2]);
        assert_eq!(d.push_bytes(&[euro[2], b'b']), "€b");
        assert!(d.pending().is_empty());
        // an invalid byte is replaced, not held
        assert_eq!(d.push_bytes(&[0xff, b'c']), "\u{fffd}c");
        // an unfinished char at the end of the stream
        assert_eq!(d.push_bytes(&euro[..2]), "");
        assert_eq!(d.flush(), "\u{fffd}");
    }

    #[test]
    fn clean_spaces_matches_llama_cpp() {
        let mut t = b"Hello , world ! it ' s I 'm they 're x 'll".to_vec();
        clean_up_spaces(&mut t);
        assert_eq!(
            String::from_utf8_lossy(&t),
            "Hello, world! it's I'm they're x 'll"
        );
    }

    #[test]
    fn byte_level_table_roundtrip() {
        let (to_char, from_char) = byte_level_tables();
        assert_eq!(to_char[b' ' as usize], 'Ġ');
        assert_eq!(to_char[b'\n' as usize], 'Ċ');
        assert_eq!(to_char[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(from_char[&to_char[b as usize]], b);
        }
    }

    #[test]
    fn find_bytes_works() {
        assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
        assert_eq!(find_bytes(b"abc", b"abcd"), None);
        assert_eq!(find_bytes(b"aab", b"ab"), Some(1));
        assert_eq!(find_bytes(b"", b"a"), None);
    }

    #[test]
    fn all_pre_tokenizers_compile() {
        for name in PRE_TOKENIZERS {
            let cfg = pre_config(name).expect("listed pre-tokenizer has a config");
            for re in cfg.regexes {
                Split::new(
                    SplitPattern::Regex(llama_unicode_regex(re)),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
        }
    }
}
