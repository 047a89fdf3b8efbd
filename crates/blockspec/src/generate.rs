//! Plain autoregressive generation: prefill the prompt, then sample and decode one token at a
//! time until a stop condition. Shared by the CLI and (later) the server.

use crate::engine::{Engine, Outputs};
use crate::sampling::Sampler;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use anyhow::{bail, Result};
use std::time::Instant;

#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Tokens to generate at most (None: until end of generation or a full context).
    pub max_tokens: Option<usize>,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Stop (and cut the text) when any of these appears in the output.
    pub stop: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// An end-of-generation token (it is the last of `tokens`, its text is not in `text`).
    Eos,
    /// The token limit.
    Limit,
    /// A stop string (cut from `text`).
    Word,
    /// The context is full.
    Context,
}

/// Timings with llama.cpp's field names.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub prompt_per_token_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    pub predicted_per_token_ms: f64,
    pub predicted_per_second: f64,
}

impl Timings {
    pub fn finish(&mut self) {
        let per = |n: usize, ms: f64| {
            if n > 0 {
                (ms / n as f64, 1000.0 * n as f64 / ms.max(1e-9))
            } else {
                (0.0, 0.0)
            }
        };
        (self.prompt_per_token_ms, self.prompt_per_second) = per(self.prompt_n, self.prompt_ms);
        (self.predicted_per_token_ms, self.predicted_per_second) =
            per(self.predicted_n, self.predicted_ms);
    }
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub timings: Timings,
}

/// Generate from `prompt` (the engine's cache is reset first). `on_text` receives each piece of
/// text as soon as it is complete UTF-8 (and not possibly the start of a stop string).
pub fn generate(
    engine: &mut Engine,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    if prompt.is_empty() {
        bail!("the prompt is empty (no tokens)");
    }
    if prompt.len() >= engine.n_ctx() {
        bail!(
            "the prompt is {} tokens, which does not fit the context of {} (-c); shorten it or raise -c",
            prompt.len(),
            engine.n_ctx()
        );
    }
    engine.reset();
    sampler.accept_all(prompt);
    let mut timings = Timings {
        prompt_n: prompt.len(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut logits = engine.decode(prompt, Outputs::Last)?;
    timings.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;

    let t1 = Instant::now();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut emitted = 0usize; // bytes of `text` already given to on_text
    let mut stream = StreamDecoder::new();
    let stop_reason;
    loop {
        let t = sampler.sample(logits.last());
        sampler.accept(t);
        out.push(t);
        if tok.is_eog(t) && !opts.ignore_eos {
            stop_reason = StopReason::Eos;
            break;
        }
        text.push_str(&stream.push(tok, t));
        if let Some(cut) = find_stop(&text, &opts.stop) {
            text.truncate(cut);
            stop_reason = StopReason::Word;
            break;
        }
        // Hold back a tail that could still grow into a stop string.
        let safe = text.len() - partial_stop_len(&text, &opts.stop);
        if safe > emitted && text.is_char_boundary(safe) {
            on_text(&text[emitted..safe]);
            emitted = safe;
        }
        if opts.max_tokens.is_some_and(|m| out.len() >= m) {
            stop_reason = StopReason::Limit;
            break;
        }
        if engine.n_past() >= engine.n_ctx() {
            stop_reason = StopReason::Context;
            break;
        }
        logits = engine.decode(&[t], Outputs::Last)?;
    }
    if stop_reason != StopReason::Eos && stop_reason != StopReason::Word {
        text.push_str(&stream.flush());
    }
    if text.len() > emitted {
        on_text(&text[emitted..]);
    }
    timings.predicted_n = out.len();
    timings.predicted_ms = t1.elapsed().as_secs_f64() * 1000.0;
    timings.finish();
    Ok(Generation {
        tokens: out,
        text,
        stop: stop_reason,
        timings,
    })
}

/// Byte index where the first stop string starts, if any occurs.
pub fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string.
pub fn partial_stop_len(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for n in (1..s.len()).rev() {
            if n <= best || n > text.len() {
                continue;
            }
            if s.is_char_boundary(n)
                && text.is_char_boundary(text.len() - n)
                && text.ends_with(&s[..n])
            {
                best = n;
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings() {
        let stops = vec!["</end>".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop("abc</end>x", &stops), Some(3));
        assert_eq!(find_stop("a\n\nb</end>", &stops), Some(1));
        assert_eq!(find_stop("abc", &stops), None);
        assert_eq!(partial_stop_len("abc</e", &stops), 3);
        assert_eq!(partial_stop_len("abc\n", &stops), 1);
        assert_eq!(partial_stop_len("abc", &stops), 0);
    }
}
