//! The pre-tokenizers: for each `tokenizer.ggml.pre` value, the regexes that split text before
//! BPE and the flags llama.cpp sets with them, the regexes restricted to llama.cpp's Unicode
//! version.

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
pub(super) fn llama_unicode_regex(re: &str) -> String {
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
pub(super) struct PreConfig {
    pub(super) regexes: &'static [&'static str],
    pub(super) clean_spaces: bool,
    pub(super) ignore_merges: bool,
    pub(super) add_bos: bool,
    pub(super) no_bos: bool,
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

/// The configuration of a `tokenizer.ggml.pre` value (None: not supported).
pub(super) fn pre_config(pre_name: &str) -> Option<PreConfig> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::SplitDelimiterBehavior;

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
