//! blockspec: LLM inference on ggml with our own graphs, built for speculative decoding.
//!
//! Pipeline: [`gguf`] (read) -> [`model`] (target graphs) -> [`engine`] (sessions, KV cache,
//! evaluation) -> [`sampling`] -> `cli`. [`tokenizer`] and [`chat`] turn text into tokens.
#![forbid(unsafe_code)]

pub mod capture;
pub mod chat;
pub mod cli;
pub mod draft;
pub mod engine;
pub mod generate;
pub mod gguf;
pub mod gguf_write;
pub mod graph_cache;
pub mod kv_cache;
pub mod model;
pub mod plot;
pub mod profile;
pub mod progress;
pub mod sampling;
pub mod server;
pub mod session;
pub mod spec;
pub mod synth;
pub mod tokenizer;
