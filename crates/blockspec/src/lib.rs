//! blockspec: LLM inference on ggml with our own graphs, built for speculative decoding.
//!
//! Pipeline: [`gguf`] (read) -> [`model`] (target graphs) -> [`engine`] (sessions, KV cache,
//! evaluation) -> [`sampling`] -> `cli`. [`tokenizer`] and [`chat`] turn text into tokens.
#![forbid(unsafe_code)]

pub mod capture;
pub mod engine;
pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod progress;
pub mod sampling;
pub mod cli { pub fn main() -> i32 { 0 } }
