//! `blockspec run`: generate from a prompt or a chat, streamed to stdout or as one JSON object.

use super::args::{ModelArgs, SamplingArgs};
use super::read_text;
use crate::decode::constrain::{gbnf, Grammar};
use crate::decode::generate::{GenerateOptions, Generation};
use crate::decode::sampling::Sampler;
use crate::session::load::load;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) model: ModelArgs,
    /// Prompt text (special tokens written inline are parsed). It may begin with a dash (a SQL
    /// comment, a markdown list), as llama.cpp takes it.
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with_all = ["chat_file", "file"],
        allow_hyphen_values = true
    )]
    prompt: Option<String>,
    /// Read the prompt text from a file.
    #[arg(short = 'f', long = "file", conflicts_with = "chat_file")]
    file: Option<PathBuf>,
    /// An OpenAI-style JSON messages array; the model's chat template is applied.
    #[arg(long = "chat-file")]
    chat_file: Option<PathBuf>,
    /// Use this Jinja chat template file instead of the model's.
    #[arg(long = "chat-template-file")]
    chat_template_file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop", allow_hyphen_values = true)]
    stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Print one JSON object (prompt_tokens, tokens, text, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Constrain the output to a llama.cpp GBNF grammar (from its `root` rule).
    #[arg(long = "grammar", conflicts_with_all = ["grammar_file", "json_schema", "json_schema_file"])]
    grammar: Option<String>,
    /// Read the GBNF grammar from a file.
    #[arg(long = "grammar-file", conflicts_with_all = ["json_schema", "json_schema_file"])]
    grammar_file: Option<PathBuf>,
    /// Constrain the output to JSON that validates against this JSON Schema (`{}`: any JSON).
    #[arg(short = 'j', long = "json-schema", conflicts_with = "json_schema_file")]
    json_schema: Option<String>,
    /// Read the JSON Schema from a file.
    #[arg(long = "json-schema-file")]
    json_schema_file: Option<PathBuf>,
}

/// The grammar the flags ask for, read and checked (as far as can be without the vocabulary);
/// the error names the flag.
fn grammar_from_args(a: &RunArgs) -> Result<Option<(Grammar, &'static str)>> {
    let gbnf = |text: String, flag: &'static str| -> Result<Option<(Grammar, &'static str)>> {
        gbnf::gbnf_to_lark(&text).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        Ok(Some((Grammar::Gbnf(text), flag)))
    };
    let schema = |text: &str, flag: &'static str| -> Result<Option<(Grammar, &'static str)>> {
        let v: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("{flag}: the schema is not valid JSON"))?;
        Ok(Some((Grammar::JsonSchema(v), flag)))
    };
    match (
        &a.grammar,
        &a.grammar_file,
        &a.json_schema,
        &a.json_schema_file,
    ) {
        (Some(g), ..) => gbnf(g.clone(), "--grammar"),
        (_, Some(f), ..) => gbnf(read_text(f, "--grammar-file")?, "--grammar-file"),
        (_, _, Some(s), _) => schema(s, "--json-schema"),
        (_, _, _, Some(f)) => schema(&read_text(f, "--json-schema-file")?, "--json-schema-file"),
        _ => Ok(None),
    }
}

/// `blockspec run`: check the inputs, load, generate.
pub(super) fn cmd_run(a: RunArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let max_tokens = match a.n_predict {
        n if n < 0 => None,
        n => Some(n as usize),
    };
    // Check inputs before the (slow) model load.
    let chat_messages = match &a.chat_file {
        Some(p) => {
            let s = read_text(p, "--chat-file")?;
            let v: serde_json::Value = serde_json::from_str(&s)
                .with_context(|| format!("--chat-file {}: invalid JSON", p.display()))?;
            Some(v)
        }
        None => None,
    };
    let template_override = match &a.chat_template_file {
        Some(p) => Some(read_text(p, "--chat-template-file")?),
        None => None,
    };
    let raw_prompt = match (&a.prompt, &a.file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => Some(read_text(f, "--file")?),
        (None, None) => None,
    };
    if raw_prompt.is_none() && chat_messages.is_none() {
        bail!("no prompt: give -p PROMPT, -f FILE or --chat-file MESSAGES.json");
    }
    let grammar = grammar_from_args(&a)?;

    let m = load(&a.model.load_config(!a.json)?)?;
    let (mut session, _) = m.first_session()?;
    let prompt_text = match chat_messages {
        Some(msgs) => {
            let tmpl = crate::text::chat::ChatTemplate::from_gguf(&m.gguf, template_override)?;
            let kwargs = crate::text::chat::llama_default_kwargs(None);
            tmpl.render(&msgs, true, None, Some(&kwargs))?
        }
        None => raw_prompt.unwrap_or_default(),
    };
    let prompt = m.tokenizer.encode(&prompt_text, true, true)?;
    params
        .check_vocab(m.model.hp.n_vocab)
        .map_err(|e| anyhow::anyhow!("--logit-bias: {e}"))?;
    let constraint = match &grammar {
        Some((g, flag)) => Some(m.grammars()?.compile(g).context(*flag)?),
        None => None,
    };
    let mut sampler = Sampler::new(params);
    let opts = GenerateOptions {
        max_tokens,
        ignore_eos: a.ignore_eos,
        stop: a.stop.clone(),
        stop_tokens: vec![],
        constraint,
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    let on_text = |piece: &str| {
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    };
    let (g, spec) = if max_tokens == Some(0) {
        // -n 0 generates nothing (as llama.cpp).
        (Generation::nothing(Default::default(), 0, Vec::new()), None)
    } else {
        session.generate(&m.tokenizer, &mut sampler, &prompt, &opts, false, on_text)?
    };
    if json {
        let mut timings = serde_json::to_value(&g.timings)?;
        if let Some(s) = &spec {
            timings["draft_n"] = s.drafted.into();
            timings["draft_n_accepted"] = s.accepted.into();
        }
        let mut out = serde_json::json!({
            "prompt": prompt_text,
            "prompt_tokens": prompt,
            "tokens": g.tokens,
            "text": g.text,
            "stop_type": g.stop,
            "timings": timings,
        });
        if let Some(s) = &spec {
            out["spec"] = serde_json::to_value(s)?;
        }
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    } else {
        writeln!(stdout)?;
        let t = &g.timings;
        eprintln!(
            "\nprompt: {} tokens in {:.1} ms ({:.1} tok/s) | generated: {} tokens in {:.1} ms ({:.1} tok/s)",
            t.prompt_n, t.prompt_ms, t.prompt_per_second, t.predicted_n, t.predicted_ms, t.predicted_per_second
        );
        if let Some(s) = &spec {
            eprintln!(
                "speculative: tau {:.2} over {} steps ({} speculative), {} of {} drafts accepted",
                s.tau, s.steps, s.spec_steps, s.accepted, s.drafted
            );
        }
    }
    Ok(())
}
