//! blockspec: LLM inference on ggml with our own graphs, built for speculative decoding.
//!
//! The folders follow the pipeline, each layer calling only the ones above it in this list:
//!
//! | module | owns |
//! | --- | --- |
//! | [`format`] | GGUF reading and writing |
//! | [`text`] | tokenizer, chat templates |
//! | [`model`] | target weights and graphs, one file per architecture |
//! | [`runtime`] | evaluation: the [`runtime::engine::Engine`], KV cache, feature capture, graph cache, profiling |
//! | [`decode`] | sampling, plain generation, drafters, speculative decoding |
//! | [`session`] | loading (`LoadConfig` -> target + drafter + memory plan) and sessions: one sequence each, ready to generate |
//! | [`server`] | the OpenAI / llama-server HTTP API |
//! | [`cli`] | the `blockspec` command: arguments to configs |
//! | [`dev`] | development tools: synthetic models, plots |
//!
//! docs/ARCHITECTURE.md has the picture, where state lives and where new features plug in.
#![forbid(unsafe_code)]

pub mod cli;
pub mod decode;
pub mod dev;
pub mod format;
pub mod model;
pub mod runtime;
pub mod server;
pub mod session;
pub mod text;
