//! Streaming text output: token ids in, complete UTF-8 text out.

use super::Tokenizer;

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
}
