//! Token ids to text: llama.cpp's `token_to_piece` (byte-level decoding, control tokens as their
//! text) and `llama_detokenize` (BOS/EOS and leading-space handling, clean-up passes).

use super::{attr, Tokenizer};
use std::collections::HashMap;

/// GPT-2 byte-level alphabet: byte -> char, and its inverse.
pub(super) fn byte_level_tables() -> ([char; 256], HashMap<char, u8>) {
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

/// llama.cpp's `token_to_piece(id, special = true)` for a BPE token with attributes `a`.
pub(super) fn piece_into(text: &str, a: u32, from_char: &HashMap<char, u8>, out: &mut Vec<u8>) {
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

impl Tokenizer {
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

    /// llama.cpp's `token_to_piece(id, special)`, from the precomputed pieces (empty for an id
    /// out of range).
    pub(super) fn piece(&self, id: u32, special: bool) -> &[u8] {
        let i = id as usize;
        if i >= self.tokens.len() {
            return b"";
        }
        if !special && self.attrs[i] & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return b"";
        }
        &self.piece_data[self.piece_off[i]..self.piece_off[i + 1]]
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
