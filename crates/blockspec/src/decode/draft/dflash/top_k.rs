//! The `k` most likely candidates of each drafted slot (a DDTree's per-depth choices), computed
//! in the drafter's graph.
//!
//! ggml's `top_k` sorts whole rows on CUDA (an argsort, unless the CUDA toolkit has CUB's
//! DeviceTopK): for the 15 drafted slots of a 152K vocabulary that took ~1 ms on an H100, as
//! long as the rest of the drafter step (2026-12-07, docs/BENCHMARKS.md). Long rows are
//! therefore cut into pieces, and only the `k` pieces with the largest maxima are searched: each
//! of a row's `k` largest entries lies in a piece whose maximum is at least that entry, and the
//! `k` chosen pieces hold `k` entries (their maxima) at least as large as anything outside them,
//! so the `k` largest entries of the chosen pieces are the `k` largest values of the row. The
//! pieces are narrow enough that the final sort (`k x piece` entries) fits one CUDA block. A row
//! is padded to whole pieces with -inf logits (probability 0, never chosen while a row has `k`
//! finite entries).

use ggml::{Context, Graph, Tensor};

/// Rows longer than this are searched piece by piece.
const ONE_SORT: usize = 2048;
/// Entries of the final sort: one CUDA block's shared-memory sort.
const FINAL_SORT: usize = 1024;

/// The graph outputs that give each slot's candidates: `k` per slot, unordered.
pub(super) struct TopOutputs {
    k: usize,
    /// Width of the pieces a row is searched in (0: one sort of the whole row).
    piece: usize,
    /// One sort: the candidates' ids (I32 `[k, slots]`). Pieces: their places among the chosen
    /// pieces' entries (`rank of the piece * piece + place in it`).
    pick: Tensor,
    /// Pieces: the chosen pieces of each slot (I32 `[k, slots]`).
    pieces: Option<Tensor>,
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
    // The piece width: a power of two with k pieces in one final sort.
    let piece = match FINAL_SORT / k.max(1) {
        0 => 0,
        w => 1 << w.ilog2(),
    };
    let out = if n <= ONE_SORT || piece < 16 {
        let probs_full = g.soft_max(logits);
        let pick = g.top_k(logits, k);
        let l3 = g.reshape(logits, &[1, n_i, s_i]);
        let p3 = g.reshape(&probs_full, &[1, n_i, s_i]);
        TopOutputs {
            k,
            piece: 0,
            logits: g.get_rows(&l3, &pick),
            probs: g.get_rows(&p3, &pick),
            pick,
            pieces: None,
        }
    } else {
        let n_pieces = n.div_ceil(piece);
        let (w, np) = (piece as i64, n_pieces as i64);
        let x = if n_pieces * piece == n {
            logits.clone()
        } else {
            // The filler's template: a contiguous view of the right size (values unused).
            let extra = (n_pieces * piece - n) as i64;
            let flat = g.view(logits, &[extra * s_i], &[], 0);
            let shape = g.reshape(&flat, &[extra, s_i]);
            let filler = g.fill(&shape, f32::NEG_INFINITY);
            g.concat(logits, &filler, 0)
        };
        // The padding's probabilities are exp(-inf) = 0.
        let p = g.soft_max(&x);
        let maxima = g.max_pool_1d(&x, piece);
        let pieces = g.top_k(&maxima, k);
        // The chosen pieces' entries, `[piece, k, slots]`, and the k largest among them.
        let gather = |g: &mut Context, t: &Tensor| {
            let t3 = g.reshape(t, &[w, np, s_i]);
            g.get_rows(&t3, &pieces)
        };
        let cand_l = gather(g, &x);
        let cand_p = gather(g, &p);
        let flat = g.reshape(&cand_l, &[w * k_i, s_i]);
        let pick = g.top_k(&flat, k);
        let select = |g: &mut Context, t: &Tensor| {
            let t3 = g.reshape(t, &[1, w * k_i, s_i]);
            g.get_rows(&t3, &pick)
        };
        let logits = select(g, &cand_l);
        let probs = select(g, &cand_p);
        TopOutputs {
            k,
            piece,
            pick,
            pieces: Some(pieces),
            logits,
            probs,
        }
    };
    for t in [
        Some(&out.pick),
        out.pieces.as_ref(),
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
        if let Some(pieces) = &self.pieces {
            let mut chosen = vec![0i32; n];
            pieces.read_i32_into(&mut chosen, 0);
            let w = self.piece as i32;
            for (i, id) in ids.iter_mut().enumerate() {
                let slot = i / self.k;
                let rank = (*id / w) as usize;
                *id = chosen[slot * self.k + rank] * w + *id % w;
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
    fn top_k_by_pieces_finds_the_largest_entries() {
        let backend = Arc::new(Backend::cpu(2));
        for (n, slots, k) in [
            (151_936, 3, 4),
            (151_936, 2, 32),
            (5_000, 3, 8),
            (3 * 1024, 2, 5),
            (151_936, 2, 1),
            (200_000, 2, 20),
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
