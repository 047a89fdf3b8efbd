//! `blockspec tokenize` and `blockspec info`: look into a model file without loading it.

use crate::session::load::open_gguf;
use crate::text::tokenizer::Tokenizer;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct TokenizeArgs {
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(long = "text", short = 'p', allow_hyphen_values = true)]
    text: String,
    /// Treat special tokens written in the text as plain text.
    #[arg(long = "no-parse-special")]
    no_parse_special: bool,
    /// Print a JSON array of ids.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(super) struct InfoArgs {
    #[arg(short = 'm', long = "model")]
    model: PathBuf,
    /// Also list every tensor.
    #[arg(long)]
    tensors: bool,
}

/// `blockspec tokenize`: print the ids of a text.
pub(super) fn cmd_tokenize(a: TokenizeArgs) -> Result<()> {
    let g = open_gguf(&a.model)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let ids = tok.encode(&a.text, true, !a.no_parse_special)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        println!("{}", s.join(" "));
    }
    Ok(())
}

/// `blockspec info`: print metadata, tensor types and sizes.
pub(super) fn cmd_info(a: InfoArgs) -> Result<()> {
    let g = open_gguf(&a.model)?;
    println!(
        "file: {} (GGUF v{}, {} file(s))",
        a.model.display(),
        g.version,
        g.files.len()
    );
    for k in g.keys() {
        let v = g.get(k).expect("listed key");
        let shown = match v {
            crate::format::gguf::Value::Array(items) => format!("[array of {}]", items.len()),
            crate::format::gguf::Value::Str(s) if s.len() > 80 => {
                format!("{:?}...", &s[..s.floor_char_boundary(80)])
            }
            other => format!("{other:?}"),
        };
        println!("  {k} = {shown}");
    }
    let mut by_type: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for t in &g.tensors {
        let e = by_type.entry(t.ty.name().to_string()).or_default();
        e.0 += 1;
        e.1 += t.nbytes;
    }
    println!(
        "tensors: {} ({:.1} MiB)",
        g.tensors.len(),
        g.tensor_data_bytes() as f64 / 1048576.0
    );
    for (ty, (n, b)) in by_type {
        println!("  {ty}: {n} tensors, {:.1} MiB", b as f64 / 1048576.0);
    }
    if a.tensors {
        for t in &g.tensors {
            println!("  {} {} {:?}", t.name, t.ty, &t.ne[..t.n_dims]);
        }
    }
    Ok(())
}
