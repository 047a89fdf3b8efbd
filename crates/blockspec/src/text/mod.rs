//! Text <-> tokens: the GGUF tokenizer ([`tokenizer`]) and chat templates ([`chat`]).

pub mod chat;
pub mod tokenizer;
