//! With default flags the output does not depend on what the prompt cache holds: a request whose
//! prompt shares a prefix with the session's previous one (a follow-up turn, the same system
//! prompt with another question, the same request again) gives the same tokens, and the same
//! log-probabilities bit for bit, as the same request on a fresh session, greedy and seeded
//! sampling alike, while the cache still saves prompt work. Real 0.5B, CPU (repacked kernels,
//! where a batch's rows depend on how the prompt is cut into batches).

mod common;

use blockspec::decode::generate::{GenerateOptions, Generation};
use blockspec::decode::sampling::{Sampler, SamplingParams};
use blockspec::session::load::{load, DraftConfig};
use blockspec::session::{LoadedModel, Session};

fn load_05b(draft: DraftConfig) -> LoadedModel {
    let path = common::model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").expect("the 0.5B");
    ggml::set_log_verbosity(false);
    // The defaults a user gets.
    let cfg = common::cpu_load_config(path, draft);
    load(&cfg).expect("load")
}

const SYSTEM: &str = "You are a careful senior software engineer. You answer questions about \
    programming precisely, with short code examples where they help, and you say so when you \
    are unsure. Prefer the standard library, explain trade-offs in one or two sentences, and \
    keep answers under two hundred words unless asked for more. When code is asked for, give \
    complete functions with their imports, name things for what they are, handle errors instead \
    of ignoring them, and add a one-line comment only where the reason is not obvious. When a \
    question is ambiguous, state the reading you chose before answering it. Never invent an API: \
    if you do not know whether a function exists, say which documentation to check.";

fn turn(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn chat(m: &LoadedModel, text: &str) -> Vec<u32> {
    let full = format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n{text}");
    m.tokenizer.encode(&full, true, true).expect("encode")
}

fn params(temperature: f32, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        seed,
        ..Default::default()
    }
}

fn generate(m: &LoadedModel, s: &mut Session, prompt: &[u32], p: &SamplingParams) -> Generation {
    let opts = GenerateOptions {
        max_tokens: Some(16),
        logprobs: Some(0),
        ..Default::default()
    };
    let mut sampler = Sampler::new(p.clone());
    s.generate(&m.tokenizer, &mut sampler, prompt, &opts, true, |_| {})
        .expect("generate")
        .0
}

/// Tokens and each token's log-probability as bits: equal only if every logit row was.
fn fingerprint(g: &Generation) -> (Vec<u32>, Vec<u32>) {
    assert_eq!(g.logprobs.len(), g.tokens.len());
    let bits = g.logprobs.iter().map(|l| l.logprob.to_bits()).collect();
    (g.tokens.clone(), bits)
}

/// Runs the requests in order on one session (each may reuse the cache the one before left) and
/// each on a fresh session; returns how many prompt tokens came from the cache in all.
fn check_cache_independent(m: &LoadedModel, requests: &[(Vec<u32>, SamplingParams)]) -> usize {
    let mut warm = m.new_session().expect("session");
    let mut reused = 0;
    for (i, (prompt, p)) in requests.iter().enumerate() {
        let cached = generate(m, &mut warm, prompt, p);
        let fresh = generate(m, &mut m.new_session().expect("session"), prompt, p);
        reused += cached.cached_prompt_n;
        assert_eq!(
            fingerprint(&cached),
            fingerprint(&fresh),
            "request {i} ({} prompt tokens, {} from the cache, T = {}): output depends on the prompt cache\n cached: {:?}\n fresh:  {:?}",
            prompt.len(),
            cached.cached_prompt_n,
            p.temperature,
            cached.text,
            fresh.text
        );
    }
    reused
}

#[test]
fn output_does_not_depend_on_the_prompt_cache() {
    let m = load_05b(DraftConfig::None);
    let (greedy, seeded) = (params(0.0, 0), params(1.0, 7));
    let q = [
        "How do I reverse a linked list in Rust?",
        "What does the `?` operator do?",
    ];
    let first = chat(&m, &turn(q[0]));
    let reply = generate(&m, &mut m.new_session().expect("session"), &first, &greedy).text;
    let follow = format!(
        "{}{reply}<|im_end|>\n{}",
        turn(q[0]),
        turn("Now iteratively.")
    );
    let requests = [
        (first, greedy.clone()),
        // A follow-up turn: the previous prompt, its reply and a new question.
        (chat(&m, &follow), greedy.clone()),
        // The same system prompt with another question, sampled with a seed, then again.
        (chat(&m, &turn(q[1])), seeded.clone()),
        (chat(&m, &turn(q[1])), seeded),
    ];
    let reused = check_cache_independent(&m, &requests);
    // The cache still saves work: at least the system prompt of each later request.
    let system_len = chat(&m, "").len();
    assert!(
        system_len >= 128,
        "the system prompt is only {system_len} tokens"
    );
    assert!(
        reused >= 3 * (system_len / 64 * 64),
        "only {reused} prompt tokens came from the cache ({system_len} in the system prompt)"
    );
}

#[test]
fn speculative_output_does_not_depend_on_the_prompt_cache() {
    let m = load_05b(DraftConfig::Ngram { n: 3, n_max: 8 });
    let p = params(0.0, 0);
    let code = "Complete this code, repeating its style:\n\
        fn area_circle(r: f64) -> f64 { 3.14159 * r * r }\n\
        fn area_square(s: f64) -> f64 { s * s }\n\
        fn area_rect(w: f64, h: f64) -> f64 {";
    let a = chat(&m, &turn(code));
    let b = chat(&m, &turn(&format!("{code} w * h }}\nfn area_triangle(")));
    check_cache_independent(&m, &[(a.clone(), p.clone()), (b, p.clone()), (a, p)]);
}

/// Hybrid models: the recurrent state cannot be cut back, so a cache hit resumes from a state
/// checkpoint; with aligned prompts only from one at the end of a whole aligned chunk (a state
/// the new prompt's own evaluation computes too). Tiny random qwen35 and qwen3next models.
#[test]
fn hybrid_output_does_not_depend_on_the_prompt_cache() {
    use blockspec::decode::generate::generate as generate_plain;
    const ALIGN: usize = 16;
    for name in ["qwen35", "qwen3next"] {
        let fx = common::hybrid::fixture(name);
        let long = fx
            .prompts
            .iter()
            .max_by_key(|p| p.len())
            .expect("prompts")
            .clone();
        assert!(
            long.len() >= 100,
            "{name}: the longest prompt has {} tokens",
            long.len()
        );
        // Another prompt sharing the first 70 tokens (4 whole chunks and 6 tokens).
        let mut other = long[..70].to_vec();
        other.extend(long[100..].iter().rev().take(40));
        let requests = [
            long.clone(),
            other.clone(),
            long.clone(),
            long.clone(),
            other,
        ];
        let run = |engine: &mut blockspec::runtime::engine::Engine, prompt: &[u32], reuse| {
            let opts = GenerateOptions {
                max_tokens: Some(12),
                logprobs: Some(0),
                reuse_kv: reuse,
                ..Default::default()
            };
            let mut sampler = Sampler::new(params(0.0, 0));
            generate_plain(engine, &fx.tok, &mut sampler, prompt, &opts, |_| {}).expect("generate")
        };
        let mut warm = fx.engine();
        warm.align_prompts(ALIGN);
        let mut previous: Vec<u32> = Vec::new();
        let mut reused = Vec::new();
        for (i, prompt) in requests.iter().enumerate() {
            let common_len = previous
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count();
            let cached = run(&mut warm, prompt, common_len);
            let mut fresh_engine = fx.engine();
            fresh_engine.align_prompts(ALIGN);
            let fresh = run(&mut fresh_engine, prompt, 0);
            assert_eq!(
                fingerprint(&cached),
                fingerprint(&fresh),
                "{name}, request {i}: {} of {} prompt tokens from the cache changed the output",
                cached.cached_prompt_n,
                prompt.len()
            );
            assert_eq!(
                cached.cached_prompt_n % ALIGN,
                0,
                "{name}: reuse not aligned"
            );
            reused.push(cached.cached_prompt_n);
            previous = prompt.iter().chain(&cached.tokens).copied().collect();
        }
        // The shared 70 tokens: 64 of them in whole chunks; the same prompt again: all but the
        // chunk holding its last token.
        let whole = (long.len() - 1) / ALIGN * ALIGN;
        assert_eq!(reused, vec![0, 64, 64, whole, 64], "{name}");
    }
}
