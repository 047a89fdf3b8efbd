//! Plain autoregressive generation: prefill the prompt, then sample and decode one token at a
//! time until a stop condition. Shared by the CLI and (later) the server.

use crate::decode::constrain::Constraint;
use crate::decode::sampling::Sampler;
use crate::runtime::engine::{Engine, Logits, Outputs};
use crate::text::tokenizer::{StreamDecoder, Tokenizer};
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// Stop (with [`StopReason::Cancelled`]) at the next token once this is set: a server's
    /// client went away, and its slot should not keep computing.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Record each generated token's log-probability and this many top candidates (None: off).
    pub logprobs: Option<usize>,
    /// Also hand each token's log-probabilities here as they are made (a server streams them),
    /// before the token's text goes to `on_text`.
    pub on_logprob: Option<LogprobSink>,
    /// The engine's first `reuse_kv` positions already hold the prompt's first `reuse_kv`
    /// tokens (a prompt cache hit); only the rest is evaluated. 0: the cache is reset.
    pub reuse_kv: usize,
    /// Also record the prompt's tokens' log-probabilities (each given the tokens before it;
    /// [`Generation::prompt_logprobs`]) with `logprobs` top candidates each: OpenAI's `echo`
    /// with `logprobs`. The whole prompt is then evaluated (no cache reuse), every position
    /// with its logits.
    pub prompt_logprobs: bool,
    /// The grammar the output must follow (from `GrammarCompiler::compile`), in its start
    /// state; `None`: unconstrained. The generation works on a copy. Generation ends at an
    /// end-of-generation token once the grammar is complete (also with `ignore_eos`).
    pub constraint: Option<Constraint>,
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
    /// [`GenerateOptions::cancel`] was set.
    Cancelled,
}

/// A callback for [`TokenLogprob`]s as they are made.
#[derive(Clone)]
pub struct LogprobSink(pub Arc<dyn Fn(&TokenLogprob) + Send + Sync>);

impl std::fmt::Debug for LogprobSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogprobSink")
    }
}

/// A generated token's log-probability under the target's distribution (softmax of its raw
/// logits, as llama.cpp reports them) and the most likely alternatives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// (token, logprob), most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    pub fn new(logits: &[f32], token: u32, n_top: usize) -> TokenLogprob {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
        let lp = |t: u32| {
            logits
                .get(t as usize)
                .map_or(f32::NEG_INFINITY, |&l| l - log_sum)
        };
        let mut top: Vec<(u32, f32)> = Vec::with_capacity(n_top + 1);
        if n_top > 0 {
            // Partial selection: only the best n_top are sorted.
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            let k = n_top.min(idx.len());
            if k < idx.len() {
                idx.select_nth_unstable_by(k - 1, |&a, &b| {
                    logits[b as usize].total_cmp(&logits[a as usize])
                });
                idx.truncate(k);
            }
            idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            top = idx.into_iter().map(|t| (t, lp(t))).collect();
        }
        TokenLogprob {
            token,
            logprob: lp(token),
            top,
        }
    }
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
    /// One per generated token when [`GenerateOptions::logprobs`] asked for them.
    pub logprobs: Vec<TokenLogprob>,
    /// Prompt tokens taken from the cache instead of evaluated ([`GenerateOptions::reuse_kv`]).
    pub cached_prompt_n: usize,
    /// With [`GenerateOptions::prompt_logprobs`]: one per prompt token after the first.
    pub prompt_logprobs: Vec<TokenLogprob>,
}

/// Collects generated tokens, turns them into text, streams complete text that cannot be the
/// start of a stop string, and says when to stop. Shared by plain and speculative generation.
pub struct Output<'a, F: FnMut(&str)> {
    tok: &'a Tokenizer,
    opts: &'a GenerateOptions,
    pub tokens: Vec<u32>,
    /// Filled by the generation loop when [`GenerateOptions::logprobs`] is set.
    pub logprobs: Vec<TokenLogprob>,
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
            logprobs: Vec::new(),
            text: String::new(),
            emitted: 0,
            stream: StreamDecoder::new(),
            on_text,
        }
    }

    /// Record the log-probabilities of the token about to be pushed (when asked for).
    pub fn note_logprobs(&mut self, logits: &[f32], t: u32) {
        if let Some(n) = self.opts.logprobs {
            self.push_logprob(TokenLogprob::new(logits, t, n));
        }
    }

    /// Record the log-probabilities of the token about to be pushed.
    pub fn push_logprob(&mut self, lp: TokenLogprob) {
        if let Some(sink) = &self.opts.on_logprob {
            (sink.0)(&lp);
        }
        self.logprobs.push(lp);
    }

    /// Add a generated token; `Some` when generation must stop after it.
    pub fn push(&mut self, t: u32) -> Option<StopReason> {
        self.tokens.push(t);
        if self
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Some(StopReason::Cancelled);
        }
        // A constrained output ends where its grammar lets it (an end-of-generation token).
        let eog_stops = !self.opts.ignore_eos || self.opts.constraint.is_some();
        if (self.tok.is_eog(t) && eog_stops) || self.opts.stop_tokens.contains(&t) {
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

/// Check what a generation's sampler is asked for against the engine (logit bias ids in the
/// vocabulary) and install the options' grammar constraint in it (or none).
pub fn prepare_sampler(
    engine: &Engine,
    sampler: &mut Sampler,
    opts: &GenerateOptions,
) -> Result<()> {
    sampler
        .params
        .check_vocab(engine.n_vocab())
        .map_err(anyhow::Error::msg)?;
    sampler.set_constraint(opts.constraint.clone());
    Ok(())
}

/// Fail when the grammar engine failed (the output can no longer be constrained).
pub fn check_constraint(sampler: &Sampler) -> Result<()> {
    match sampler.constraint_error() {
        Some(e) => bail!("constrained decoding failed: {e}"),
        None => Ok(()),
    }
}

/// Check the prompt fits, reset the engine (keeping the first `opts.reuse_kv` positions, a
/// prompt cache hit) and the sampler history, and prefill the rest. Returns the last position's
/// logits and, with `opts.prompt_logprobs`, the scores of the prompt's tokens after the first
/// (the whole prompt is then evaluated).
pub fn prefill(
    engine: &mut Engine,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenerateOptions,
    timings: &mut Timings,
) -> Result<(Logits, Vec<TokenLogprob>)> {
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
    // At least the last prompt token is evaluated: its logits give the first token.
    let scored = opts.prompt_logprobs;
    let reuse = if scored { 0 } else { opts.reuse_kv };
    let reuse = reuse.min(prompt.len() - 1).min(engine.n_past());
    // A recurrent state may not go back to `reuse`, and an exact cache keeps only what this
    // prompt's own evaluation would compute the same way: then fewer positions are kept.
    let reuse = engine.keep_prompt_prefix(reuse);
    sampler.accept_all(prompt);
    timings.prompt_n = prompt.len() - reuse;
    let t0 = Instant::now();
    // A recurrent state cannot be cut back: keep this prompt's (for a next request that extends
    // it) and the one a token before its end (the same prompt again re-evaluates its last
    // token to get its logits). Scored prompts are evaluated in the same two parts.
    let mut rest = &prompt[reuse..];
    let mut head_rows = Vec::new();
    let mut scores = Vec::new();
    if (engine.is_hybrid() || scored) && rest.len() > 1 {
        let head = &rest[..rest.len() - 1];
        if scored {
            let (n_vocab, n_top) = (engine.n_vocab(), opts.logprobs.unwrap_or(0));
            let mut next = prompt[1..].iter();
            engine.prefill_scored(head, &mut |rows: &[f32]| {
                for row in rows.chunks_exact(n_vocab) {
                    if let Some(&t) = next.next() {
                        scores.push(TokenLogprob::new(row, t, n_top));
                    }
                }
            })?;
        } else {
            engine.prefill(head)?;
        }
        // A drafter reads every evaluated prompt position's features (`Engine::captured`).
        head_rows = engine.captured().to_vec();
        engine.save_checkpoint()?;
        rest = &rest[rest.len() - 1..];
    }
    let logits = engine.prefill(rest)?;
    engine.prepend_captured(head_rows);
    engine.save_checkpoint()?;
    timings.prompt_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok((logits, scores))
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
    prepare_sampler(engine, sampler, opts)?;
    let mut timings = Timings::default();
    let (mut logits, prompt_logprobs) = prefill(engine, sampler, prompt, opts, &mut timings)?;
    let cached_prompt_n = prompt.len() - timings.prompt_n;
    if opts.max_tokens == Some(0) {
        return Ok(Generation::nothing(
            timings,
            cached_prompt_n,
            prompt_logprobs,
        ));
    }
    let t1 = Instant::now();
    let mut out = Output::new(tok, opts, on_text);
    // Log-probabilities need the logits; otherwise a GPU reads back only the argmax id.
    let device_argmax =
        sampler.is_plain_argmax() && engine.prefers_device_argmax() && opts.logprobs.is_none();
    let mut next = sampler.sample(logits.last());
    let stop = loop {
        let t = next;
        sampler.accept(t);
        check_constraint(sampler)?;
        out.note_logprobs(logits.last(), t);
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
    let logprobs = std::mem::take(&mut out.logprobs);
    let (tokens, text) = out.finish(stop);
    timings.predicted_n = tokens.len();
    timings.predicted_ms = t1.elapsed().as_secs_f64() * 1000.0;
    timings.finish();
    Ok(Generation {
        tokens,
        text,
        stop,
        timings,
        logprobs,
        cached_prompt_n,
        prompt_logprobs,
    })
}

impl Generation {
    /// A generation of no tokens (a token limit of 0), stopped at the limit.
    pub fn nothing(
        timings: Timings,
        cached_prompt_n: usize,
        prompt_logprobs: Vec<TokenLogprob>,
    ) -> Generation {
        Generation {
            tokens: Vec::new(),
            text: String::new(),
            stop: StopReason::Limit,
            timings,
            logprobs: Vec::new(),
            cached_prompt_n,
            prompt_logprobs,
        }
    }
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
