//! The tiny random hybrid models of tests/fixtures/hybrid/ on a CPU backend.

use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig};
use blockspec::text::tokenizer::Tokenizer;
use std::sync::Arc;

pub const N_CTX: usize = 256;
pub const N_UBATCH: usize = 64;

/// One tiny fixture: its model on a CPU backend, its tokenizer and its reference prompts.
pub struct Fixture {
    pub name: &'static str,
    pub gguf: Gguf,
    pub tok: Tokenizer,
    pub model: Arc<Model>,
    pub backend: Arc<ggml::Backend>,
    /// The reference.json prompts (1, 7, 40 and 160 tokens).
    pub prompts: Vec<Vec<u32>>,
}

pub fn fixture(name: &'static str) -> Fixture {
    ggml::set_log_verbosity(false);
    let path = super::fixture(&format!("hybrid/{name}/model-f32.gguf"));
    let gguf = Gguf::open(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    // One thread: these models are too small to gain from two, and a shared machine cannot
    // stall a thread barrier.
    let backend = Arc::new(ggml::Backend::cpu(1));
    let model =
        Arc::new(Model::load_with(&gguf, &backend, false, false).expect("load the tiny model"));
    assert!(model.is_hybrid(), "{name}: not a hybrid model");
    let fx = super::read_json(&format!("hybrid/{name}/reference.json"));
    let prompts = fx["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| super::ids(&s["ids"]))
        .collect();
    Fixture {
        name,
        gguf,
        tok,
        model,
        backend,
        prompts,
    }
}

impl Fixture {
    pub fn engine_with(&self, n_ubatch: usize, capture_layers: Vec<usize>) -> Engine {
        let cfg = EngineConfig {
            n_ctx: N_CTX,
            n_ubatch,
            type_k: ggml::Type::F32,
            type_v: ggml::Type::F32,
            capture_layers,
        };
        Engine::new(self.model.clone(), self.backend.clone(), cfg).expect("engine")
    }
    pub fn engine(&self) -> Engine {
        self.engine_with(N_UBATCH, vec![])
    }
}
