//! The `k` most likely candidates of each drafted slot (a DDTree's per-depth choices), computed
//! in the drafter's graph.
//!
//! ggml's `top_k` sorts whole rows on CUDA (an argsort, unless the CUDA toolkit has CUB's
//! DeviceTopK): for the 15 drafted slots of a 152K vocabulary that took ~1 ms on an H100, as
//! long as the rest of the drafter step (2026-12-07, docs/BENCHMARKS.md). Long rows therefore go
//! in two stages: the top `k` of each [`CHUNK`]-wide piece of the row (a sort in shared memory),
//! then the top `k` of those `k x pieces` survivors. Every entry of a row's top `k` is among the
//! top `k` of its own piece, so the result is the same set of values as one sort of the row.
//! A row is padded to whole pieces with -inf logits (never chosen while a row has `k` finite
//! ones).

use ggml::{Context, Graph, Tensor};

/// Width of a first-stage piece: rows up to this long sort in one CUDA block's shared memory.
pub(super) const CHUNK: usize = 1024;

/// The graph outputs that give each slot's candidates: `k` per slot, unordered.
pub(super) struct TopOutputs {
    k: usize,
    /// One stage: the candidates' ids (I32 `[k, slots]`). Two stages: their places among the
    /// survivors of their slot (`piece * k + rank in the piece`).
    pick: Tensor,
    /// Two stages: the candidates' places within their pieces (I32 `[1, k, slots]`).
    local: Option<Tensor>,
    /// The candidates' logits and probabilities (`k x slots` values).
    logits: Tensor,
    probs: Tensor,
}

/// Per slot (column) of `logits` (`[n, slots]`, F32, contiguous), nodes that select the `k`
/// largest logits, their values and their softmax probabilities over the whole row. Adds the
/// outputs to `gf`.
pub(super) fn top_k_nodes(
    g: &mut Context,
    gf: &Graph,
    logits: &Tensor,
    n: usize,
    slots: usize,
    k: usize,
) -> TopOutputs {
    let (n_i, s_i, k_i) = (n as i64, slots as i64, k as i64);
    let probs_full = g.soft_max(logits);
    let out = if n <= 2 * CHUNK || k > CHUNK {
        let pick = g.top_k(logits, k);
        let l3 = g.reshape(logits, &[1, n_i, s_i]);
        let p3 = g.reshape(&probs_full, &[1, n_i, s_i]);
        TopOutputs {
            k,
            logits: g.get_rows(&l3, &pick),
            probs: g.get_rows(&p3, &pick),
            pick,
            local: None,
        }
    } else {
        let pieces = n.div_ceil(CHUNK);
        let (c, np) = (CHUNK as i64, pieces as i64);
        let pad = |g: &mut Context, t: &Tensor, value: f32| {
            if pieces * CHUNK == n {
                return t.clone();
            }
            // The filler's template: a contiguous view of the right size (values unused).
            let extra = (pieces * CHUNK - n) as i64;
            let flat = g.view(t, &[extra * s_i], &[], 0);
            let shape = g.reshape(&flat, &[extra, s_i]);
            let filler = g.fill(&shape, value);
            g.concat(t, &filler, 0)
        };
        let x = pad(g, logits, f32::NEG_INFINITY);
        let p = pad(g, &probs_full, 0.0);
        // Stage 1: each piece's top k (places within the piece), and their values.
        let x2 = g.reshape(&x, &[c, np * s_i]);
        let local_all = g.top_k(&x2, k);
        let x3 = g.reshape(&x, &[1, c, np * s_i]);
        let p3 = g.reshape(&p, &[1, c, np * s_i]);
        let surv_l = g.get_rows(&x3, &local_all);
        let surv_p = g.get_rows(&p3, &local_all);
        // Stage 2: the slot's top k among its pieces' survivors.
        let surv2 = g.reshape(&surv_l, &[k_i * np, s_i]);
        let pick = g.top_k(&surv2, k);
        let gather = |g: &mut Context, t: &Tensor| {
            let t3 = g.reshape(t, &[1, k_i * np, s_i]);
            g.get_rows(&t3, &pick)
        };
        let logits = gather(g, &surv_l);
        let probs = gather(g, &surv_p);
        let local = gather(g, &local_all);
        TopOutputs {
            k,
            pick,
            local: Some(local),
            logits,
            probs,
        }
    };
    for t in [
        Some(&out.pick),
        out.local.as_ref(),
        Some(&out.logits),
        Some(&out.probs),
    ]
    .into_iter()
    .flatten()
    {
        g.set_output(t);
        g.build_forward_expand(gf, t);
    }
    out
}

impl TopOutputs {
    /// Read the candidates after the graph ran: (ids, logits, probabilities), `k` per slot,
    /// slot-major, in no particular order within a slot.
    pub(super) fn read(&self, slots: usize) -> (Vec<i32>, Vec<f32>, Vec<f32>) {
        let n = self.k * slots;
        let mut ids = vec![0i32; n];
        self.pick.read_i32_into(&mut ids, 0);
        if let Some(local) = &self.local {
            let mut places = vec![0i32; n];
            local.read_i32_into(&mut places, 0);
            let k = self.k as i32;
            for (id, place) in ids.iter_mut().zip(places) {
                *id = *id / k * CHUNK as i32 + place;
            }
        }
        let (mut logits, mut probs) = (vec![0f32; n], vec![0f32; n]);
        self.logits.read_f32_into(&mut logits, 0);
        self.probs.read_f32_into(&mut probs, 0);
        (ids, logits, probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ggml::{Backend, Sched, Type};
    use std::sync::Arc;

    /// The candidates of random rows (with ties and rows that need padding) against a sort on
    /// the host: the same values, ids that hold them, and probabilities that match a softmax.
    #[test]
    fn two_stage_top_k_finds_the_largest_entries() {
        let backend = Arc::new(Backend::cpu(2));
        for (n, slots, k) in [
            (151_936, 3, 4),
            (151_936, 2, 32),
            (5_000, 3, 8),
            (3 * CHUNK, 2, 5),
            (700, 2, 3),
        ] {
            let mut g = Context::new(64, 256);
            let gf = g.new_graph(256);
            let x = g.input(Type::F32, &[n as i64, slots as i64], "logits");
            let top = top_k_nodes(&mut g, &gf, &x, n, slots, k);
            let mut sched = Sched::new(backend.sched_backends(), 256);
            assert!(sched.alloc_graph(&gf));
            // A fixed pseudo-random fill, coarse enough to tie often.
            let mut state = 0x2545_f491_4f6c_dd1du64 ^ n as u64;
            let data: Vec<f32> = (0..n * slots)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 20_000) as f32 / 1000.0 - 10.0
                })
                .collect();
            x.write_f32(&data);
            sched.compute(&gf).expect("compute");
            let (ids, logits, probs) = top.read(slots);
            for s in 0..slots {
                let row = &data[s * n..(s + 1) * n];
                let mut sorted = row.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let max = sorted[0];
                let z: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
                let mut got: Vec<f32> = logits[s * k..(s + 1) * k].to_vec();
                got.sort_by(|a, b| b.total_cmp(a));
                assert_eq!(got, sorted[..k], "n {n} k {k} slot {s}");
                let mut seen = std::collections::HashSet::new();
                for i in s * k..(s + 1) * k {
                    let id = ids[i] as usize;
                    assert!(id < n && seen.insert(id), "n {n} k {k}: id {id}");
                    assert_eq!(row[id], logits[i], "n {n} k {k}: the value of id {id}");
                    let p = ((row[id] - max) as f64).exp() / z;
                    assert!(
                        (probs[i] as f64 - p).abs() <= 1e-5 * p.max(1e-6),
                        "{} vs {p}",
                        probs[i]
                    );
                }
            }
        }
    }
}
