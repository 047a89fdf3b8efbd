//! Plain autoregressive generation: prefill the prompt, then sample and decode one token at a
//! time until a stop condition. Shared by the CLI and (later) the server.

use crate::engine::{Engine, Logits, Outputs};
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
    /// Also stop after any of these token ids (besides the model's end-of-generation tokens).
    pub stop_tokens: Vec<u32>,
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

/// Collects generated tokens, turns them into text, streams complete text that cannot be the
/// start of a stop string, and says when to stop. Shared by plain and speculative generation.
pub struct Output<'a, F: FnMut(&str)> {
    tok: &'a Tokenizer,
    opts: &'a GenerateOptions,
    pub tokens: Vec<u32>,
    text: String,
    /// Bytes of `text` already given to `on_text`.
    emitted: usize,
    stream: StreamDecoder,
    on_text: F,
}

impl<'a, F: FnMut(&str)> Output<'a, F> {
    pub fn new(tok: &'a Tokenizer, opts: &'a GenerateOptions, on_text: F) -> Self {
        Output {
            tok,
            opts,
            tokens: Vec::new(),
            text: String::new(),
            emitted: 0,
            stream: StreamDecoder::new(),
            on_text,
        }
    }

    /// Add a generated token; `Some` when generation must stop after it.
    pub fn push(&mut self, t: u32) -> Option<StopReason> {
        self.tokens.push(t);
        if (self.tok.is_eog(t) && !self.opts.ignore_eos) || self.opts.stop_tokens.contains(&t) {
            return Some(StopReason::Eos);
        }
        self.text.push_str(&self.stream.push(self.tok, t));
        if let Some(cut) = find_stop(&self.text, &self.opts.stop) {
            self.text.truncate(cut);
            return Some(StopReason::Word);
        }
        // Hold back a tail that could still grow into a stop string.
        let safe = self.text.len() - partial_stop_len(&self.text, &self.opts.stop);
        if safe > self.emitted && self.text.is_char_boundary(safe) {
            (self.on_text)(&self.text[self.emitted..safe]);
            self.emitted = safe;
        }
        if self.opts.max_tokens.is_some_and(|m| self.tokens.len() >= m) {
            return Some(StopReason::Limit);
        }
        None
    }

    /// Emit what is left; returns (tokens, text).
    pub fn finish(mut self, stop: StopReason) -> (Vec<u32>, String) {
        if stop != StopReason::Eos && stop != StopReason::Word {
            self.text.push_str(&self.stream.flush());
        }
        if self.text.len() > self.emitted {
            (self.on_text)(&self.text[self.emitted..]);
        }
        (self.tokens, self.text)
    }
}

/// Check the prompt fits, reset the engine and the sampler history, and prefill.
pub fn prefill(
    engine: &mut Engine,
    sampler: &mut Sampler,
    prompt: &[u32],
    timings: &mut Timings,
) -> Result<Logits> {
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
    timings.prompt_n = prompt.len();
    let t0 = Instant::now();
    let logits = engine.decode(prompt, Outputs::Last)?;
    timings.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok(logits)
}

/// Generate from `prompt` (the engine's cache is reset first). `on_text` receives each piece of
/// text as soon as it is complete UTF-8 (and not possibly the start of a stop string).
pub fn generate(
    engine: &mut Engine,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Generation> {
    let mut timings = Timings::default();
    let mut logits = prefill(engine, sampler, prompt, &mut timings)?;
    let t1 = Instant::now();
    let mut out = Output::new(tok, opts, on_text);
    let device_argmax = sampler.is_plain_argmax() && engine.prefers_device_argmax();
    let mut next = sampler.sample(logits.last());
    let stop = loop {
        let t = next;
        sampler.accept(t);
        if let Some(stop) = out.push(t) {
            break stop;
        }
        if engine.n_past() >= engine.n_ctx() {
            break StopReason::Context;
        }
        next = if device_argmax {
            engine.decode_argmax(&[t], Outputs::Last)?[0]
        } else {
            logits = engine.decode(&[t], Outputs::Last)?;
            sampler.sample(logits.last())
        };
    };
    let (tokens, text) = out.finish(stop);
    timings.predicted_n = tokens.len();
    timings.predicted_ms = t1.elapsed().as_secs_f64() * 1000.0;
    timings.finish();
    Ok(Generation {
        tokens,
        text,
        stop,
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
