//! Evaluation of target graphs: the [`engine::Engine`] (one sequence's KV cache, graph building
//! and reuse, decode calls), the KV cache itself, the hidden-state capture a drafter reads, the
//! graph cache and opt-in phase timers.

pub mod capture;
pub mod engine;
pub mod graph_cache;
pub mod kv_cache;
pub mod profile;
pub mod recurrent_state;
