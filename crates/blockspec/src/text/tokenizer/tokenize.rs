//! Text to token ids: special tokens cut out of the text first (llama.cpp's
//! `tokenizer_st_partition`), the remaining fragments through BPE.

use super::{attr, Tokenizer};
use anyhow::{anyhow, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_bytes_works() {
        assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
        assert_eq!(find_bytes(b"abc", b"abcd"), None);
        assert_eq!(find_bytes(b"aab", b"ab"), Some(1));
        assert_eq!(find_bytes(b"", b"a"), None);
    }
}
