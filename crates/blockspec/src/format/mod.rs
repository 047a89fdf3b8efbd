//! File formats: GGUF read ([`gguf`]) and write ([`gguf_write`]).

pub mod gguf;
pub mod gguf_write;
