//! The DFlash drafter reads the target's captured features where the verify left them
//! (`Features::Device`: its block graph gathers rows of the target's capture buffer) instead of
//! from host copies (`Features::Host`). Both must draft the same tokens, bit for bit, through
//! any mix of draft steps, plain steps, short and long blocks and a resumed prompt; and a
//! drafter left holding features the target has since overwritten must fail, never draft from
//! them. Tiny Qwen3 target and the z-lab fixture drafter (tests/fixtures/dflash).

mod common;

use blockspec::decode::draft::dflash::{DFlashDrafter, DFlashWeights};
use blockspec::decode::draft::{Drafter, Features};
use blockspec::decode::sampling::argmax;
use blockspec::format::gguf::Gguf;
use blockspec::model::Model;
use blockspec::runtime::engine::{Engine, EngineConfig, Outputs};
use std::sync::Arc;

struct Rig {
    engine: Engine,
    /// Fed `Features::Device` after each step.
    device: DFlashDrafter,
    /// The same weights, fed host copies of the same rows.
    host: DFlashDrafter,
}

fn rig() -> Rig {
    let g = Gguf::open(&common::fixture("tiny/qwen3/model-f32.gguf")).expect("target");
    let backend = Arc::new(ggml::Backend::cpu(2));
    let model = Arc::new(Model::load_with(&g, &backend, false, false).expect("load"));
    let weights = DFlashWeights::load(
        &common::fixture("dflash/tiny-qwen3-drafter"),
        &model,
        &backend,
        None,
    )
    .expect("drafter weights");
    let drafter = || {
        DFlashDrafter::new(
            weights.clone(),
            model.clone(),
            backend.clone(),
            256,
            0,
            ggml::Type::F16,
        )
        .expect("drafter")
    };
    let (device, host) = (drafter(), drafter());
    let cfg = EngineConfig {
        n_ctx: 256,
        n_ubatch: 64,
        type_k: ggml::Type::F16,
        type_v: ggml::Type::F16,
        capture_layers: device.target_layers().to_vec(),
    };
    let engine = Engine::new(model, backend, cfg).expect("engine");
    Rig {
        engine,
        device,
        host,
    }
}

/// A prompt the fixture drafter memorised (whole blocks accepted: multi-row commits).
fn seen_prompt() -> Vec<u32> {
    let fx = common::read_json("dflash/reference.json");
    common::ids(&fx["cases_seen"][0]["prompt"])
}

impl Rig {
    /// Prefill `prompt[reuse..]` and start both drafters; returns the first token.
    fn start(&mut self, prompt: &[u32], reuse: usize) -> u32 {
        self.engine.truncate(reuse);
        let logits = self
            .engine
            .decode(&prompt[reuse..], Outputs::Last)
            .expect("prefill");
        let feats = self.engine.captured().to_vec();
        self.device
            .begin_from(prompt, reuse, &feats)
            .expect("device begin");
        self.host
            .begin_from(prompt, reuse, &feats)
            .expect("host begin");
        argmax(logits.last())
    }

    /// One step of length `n` (1: plain) after `last`, greedy verify; both drafters must
    /// propose the same tokens. Returns the next `last` and the drafts accepted.
    fn step(&mut self, last: u32, n: usize) -> (u32, usize) {
        let mut block = vec![last];
        if n == 1 {
            self.device.release_capture().expect("release");
        } else {
            self.device.sync().expect("sync");
            self.host.sync().expect("sync");
            let d = Drafter::draft(&mut self.device, last, n).expect("device draft");
            let h = Drafter::draft(&mut self.host, last, n).expect("host draft");
            assert_eq!(d, h, "device-fed and host-fed drafts differ (length {n})");
            block.extend(d);
        }
        let start = self.engine.n_past();
        let logits = self.engine.decode(&block, Outputs::All).expect("verify");
        let mut k = 0;
        let next = loop {
            let t = argmax(logits.row(k));
            if k + 1 < block.len() && block[k + 1] == t {
                k += 1;
                continue;
            }
            break t;
        };
        self.engine.truncate(start + k + 1);
        let rows = self
            .engine
            .captured_on_device(k + 1)
            .expect("a one-chunk verify leaves its rows on the device");
        assert!(rows.is_current());
        let mut copy = Vec::new();
        rows.read_into(&mut copy);
        self.device
            .commit(&block[..=k], Features::Device(rows))
            .expect("device commit");
        self.host
            .commit(&block[..=k], Features::Host(&copy))
            .expect("host commit");
        assert_eq!(self.device.n_known(), self.host.n_known());
        (next, k)
    }
}

#[test]
fn device_fed_drafts_equal_host_fed_drafts() {
    let mut r = rig();
    let prompt = seen_prompt();
    let mut last = r.start(&prompt, 0);
    // Full blocks, plain steps in between (the device rows must be copied before the target
    // overwrites them), short blocks, and a long run of plain steps (a backlog to catch up).
    let lengths = [
        8, 8, 1, 8, 1, 1, 3, 8, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 8, 5, 8,
    ];
    let mut accepted = 0;
    for &n in &lengths {
        let (next, k) = r.step(last, n);
        accepted += k;
        last = next;
    }
    assert!(
        accepted >= 10,
        "only {accepted} drafts accepted: the test should exercise multi-row commits"
    );

    // A new generation resuming the first one's prefix (a prompt cache hit): the drafters keep
    // the shared positions' draft context, including the last step's device rows.
    r.device.release_capture().expect("release");
    let mut prompt2 = prompt.clone();
    prompt2.extend_from_slice(&[prompt[1], prompt[2]]);
    let mut last = r.start(&prompt2, prompt.len());
    for &n in &[8, 1, 8, 8] {
        last = r.step(last, n).0;
    }
}

#[test]
fn drafting_from_overwritten_features_is_an_error() {
    let mut r = rig();
    let prompt = seen_prompt();
    let last = r.start(&prompt, 0);
    r.step(last, 8);
    // The target evaluates again while the drafter still refers to the last step's rows.
    r.engine.decode(&[last], Outputs::All).expect("decode");
    let err = Drafter::draft(&mut r.device, last, 8).expect_err("must refuse stale features");
    assert!(
        format!("{err:#}").contains("evaluated again before the drafter read"),
        "unexpected error: {err:#}"
    );
    // Committing new device rows on top of stale ones is refused the same way.
    let mut r = rig();
    let last = r.start(&prompt, 0);
    r.step(last, 8);
    r.engine.decode(&[last], Outputs::All).expect("decode");
    let rows = r.engine.captured_on_device(1).expect("rows");
    let err = r
        .device
        .commit(&[last], Features::Device(rows))
        .expect_err("must refuse");
    assert!(format!("{err:#}").contains("evaluated again"), "{err:#}");
}

#[test]
fn rows_are_only_on_the_device_after_a_one_chunk_decode() {
    let mut r = rig();
    let prompt = seen_prompt();
    // n_ubatch is 64: a 100-token input runs in two chunks, so its rows are not all there.
    let long: Vec<u32> = prompt.iter().copied().cycle().take(100).collect();
    r.engine.decode(&long, Outputs::Last).expect("prefill");
    assert!(r.engine.captured_on_device(1).is_none());
    r.engine
        .decode(&[prompt[0], prompt[1]], Outputs::All)
        .expect("decode");
    assert!(r.engine.captured_on_device(3).is_none(), "only 2 rows");
    let rows = r.engine.captured_on_device(2).expect("2 rows");
    assert!(rows.is_current());
    r.engine.decode(&[prompt[2]], Outputs::All).expect("decode");
    assert!(!rows.is_current());
}
