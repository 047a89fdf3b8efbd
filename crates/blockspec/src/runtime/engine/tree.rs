//! Tree verification (DDTree) on a dense target: a draft tree's entries (the root, the last
//! committed token, then the nodes, parents first) evaluated in one graph, and the accepted
//! path's state compacted afterwards without another forward.
//!
//! Entry i sits at position `start + depth(i)` and writes its K/V to cell `start + i`; its mask
//! row sees the committed prefix (cells `0..start`), its ancestors' cells and its own. The batch
//! is padded to a fixed row count (one graph per budget, reused every step); padded rows write
//! the cells after the tree and see the prefix and themselves only, so no real row sees them.
//! After the walk, [`Engine::commit_tree_path`] copies the accepted entries' KV rows and captured
//! feature rows to `start + 1..` (device copies) and truncates there: the cache then holds what
//! evaluating the path as a chain would have written.

use super::{Engine, Logits, PendingTree, ReadBack, F16_NEG_INF, F16_ZERO, KV_PAD};
use crate::model::tree_levels::TreeLevels;
use crate::model::GraphShape;
use crate::runtime::capture::read_f32_staged;
use crate::runtime::profile;
use anyhow::{bail, Result};

/// A draft tree to verify: per entry (the root first, then the nodes, every parent before its
/// children) its token, parent entry (the root's is 0) and depth (the root's is 0).
#[derive(Clone, Copy, Debug)]
pub struct TreeBatch<'a> {
    /// Token of each entry.
    pub tokens: &'a [u32],
    /// Parent entry of each entry.
    pub parents: &'a [usize],
    /// Depth of each entry below the root.
    pub depths: &'a [usize],
}

impl TreeBatch<'_> {
    fn check(&self) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 || self.parents.len() != n || self.depths.len() != n {
            bail!(
                "tree verify: {n} tokens, {} parents and {} depths",
                self.parents.len(),
                self.depths.len()
            );
        }
        if self.depths[0] != 0 {
            bail!("tree verify: the root has depth {}", self.depths[0]);
        }
        for i in 1..n {
            let p = self.parents[i];
            if p >= i || self.depths[i] != self.depths[p] + 1 {
                bail!(
                    "tree verify: entry {i} has parent {p} at depth {} (its depth {})",
                    self.depths[p],
                    self.depths[i]
                );
            }
        }
        Ok(())
    }

    /// The mask rows (F16 bits, `padded x n_kv`) of a tree at `start`: each entry sees the
    /// prefix, its ancestors and itself; a padded row the prefix and itself.
    fn mask(&self, start: usize, padded: usize, n_kv: usize) -> Vec<u16> {
        let mut m = vec![F16_NEG_INF; padded * n_kv];
        for r in 0..padded {
            let row = &mut m[r * n_kv..(r + 1) * n_kv];
            row[..start].fill(F16_ZERO);
            row[start + r] = F16_ZERO;
            if r < self.tokens.len() {
                let mut j = r;
                while j != 0 {
                    j = self.parents[j];
                    row[start + j] = F16_ZERO;
                }
            }
        }
        m
    }
}

impl Engine {
    /// Evaluate a draft tree at positions `n_past + depth`, as a batch of `padded` rows (at
    /// least the tree's entries; equal sizes reuse one graph), and return the logits of the
    /// tree's entries. The next step is [`commit_tree_path`](Self::commit_tree_path).
    /// Dense targets only: a hybrid target's recurrent layers would need each node's state
    /// computed from its parent's.
    pub fn decode_tree(&mut self, tree: TreeBatch, padded: usize) -> Result<Logits> {
        let mut data = Vec::new();
        self.eval_tree(tree, padded, &mut ReadBack::Logits(&mut data))?;
        Ok(Logits {
            data,
            n_vocab: self.model.hp.n_vocab,
        })
    }

    /// Like [`decode_tree`](Self::decode_tree), but returns each entry's most likely token,
    /// computed on the backend.
    pub fn decode_tree_argmax(&mut self, tree: TreeBatch, padded: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        self.eval_tree(tree, padded, &mut ReadBack::Argmax(&mut ids))?;
        Ok(ids)
    }

    fn eval_tree(&mut self, tree: TreeBatch, padded: usize, read: &mut ReadBack) -> Result<()> {
        tree.check()?;
        let n = tree.tokens.len();
        if padded < n {
            bail!("tree verify: {n} entries do not fit a batch of {padded}");
        }
        if self.state.is_some() && padded > self.max_rollback_len() {
            bail!(
                "tree verify: a batch of {padded} on a hybrid target keeps at most {} rows' states",
                self.max_rollback_len()
            );
        }
        if padded > self.cfg.n_ubatch.min(self.cfg.n_ctx) {
            bail!(
                "tree verify: a batch of {padded} exceeds the batch size {} (-ub)",
                self.cfg.n_ubatch
            );
        }
        if self.n_past + padded > self.cfg.n_ctx {
            bail!(
                "context full: {} cached + a tree batch of {padded} exceed the context size {} (-c)",
                self.n_past,
                self.cfg.n_ctx
            );
        }
        let n_vocab = self.model.hp.n_vocab;
        if let Some(&bad) = tree.tokens.iter().find(|&&t| t as usize >= n_vocab) {
            bail!("token id {bad} out of range (vocabulary size {n_vocab})");
        }
        if self.pending.is_some() || self.pending_tree.is_some() {
            self.truncate(self.n_past);
        }
        // A hybrid target's recurrent layers go down the tree level by level; padded rows
        // hang under the root.
        let (mut parents, mut depths) = (tree.parents.to_vec(), tree.depths.to_vec());
        parents.resize(padded, 0);
        depths.resize(padded, 1);
        let levels = match &self.state {
            Some(_) => Some(TreeLevels::of(&parents, &depths)?),
            None => None,
        };
        self.captured.clear();
        (self.chunk_rows, self.chunk_read) = (0, 0);
        self.last_cold = false;
        if let Some(cap) = &self.capture {
            cap.begin_write();
        }
        let start = self.n_past;
        let n_kv = ((start + padded).div_ceil(KV_PAD) * KV_PAD).min(self.kv.n_ctx);
        let shape = GraphShape {
            n_tokens: padded,
            n_kv,
            n_outputs: padded,
            capture: self.capture.is_some(),
            keep_states: false,
            tree: levels,
        };
        self.build_graph_once(shape);
        let g = self.graphs.prepare(shape)?;
        let inputs = profile::scope("engine.inputs");
        if let (Some(levels), Some(index), Some(state)) = (&levels, &g.tree_index, &self.state) {
            index.write_i32(&levels.index(&parents, &depths, state.ssm.d_conv));
        }
        let kept_tree = g.kept_tree.clone();
        let mut toks: Vec<i32> = tree.tokens.iter().map(|&t| t as i32).collect();
        toks.resize(padded, toks[0]);
        g.tokens.write_i32(&toks);
        let mut pos: Vec<i32> = tree.depths.iter().map(|&d| (start + d) as i32).collect();
        pos.resize(padded, start as i32);
        // Sections after the first three (multi-section RoPE) hold 0, as in `positions`.
        let mut all = Vec::with_capacity(padded * g.pos_sections);
        for s in 0..g.pos_sections {
            if s < 3 {
                all.extend_from_slice(&pos);
            } else {
                all.extend(std::iter::repeat_n(0, padded));
            }
        }
        g.pos.write_i32(&all);
        let rows: Vec<i64> = (start..start + padded).map(|p| p as i64).collect();
        g.kv_rows.write_i64(&rows);
        g.mask.write_f16_bits(&tree.mask(start, padded, n_kv));
        let (logits_t, argmax_t, hidden_t) = (g.logits.clone(), g.argmax.clone(), g.hidden.clone());
        drop(inputs);
        {
            let _p = profile::scope("engine.compute");
            self.last_cold |= self.graphs.compute(shape)?;
        }
        self.forwards += 1;
        if levels.is_some() {
            self.pending_tree = Some(PendingTree {
                start,
                slots: TreeLevels::slots(&depths),
                kept: kept_tree,
            });
        }
        self.n_past += padded;
        let _p = profile::scope("engine.read");
        match read {
            ReadBack::Logits(out) => {
                read_f32_staged(&logits_t, 0, n * n_vocab, self.staging.as_mut(), out);
            }
            ReadBack::Each(each) => {
                let mut rows = Vec::new();
                read_f32_staged(&logits_t, 0, n * n_vocab, self.staging.as_mut(), &mut rows);
                each(&rows);
            }
            ReadBack::Argmax(out) => {
                let mut ids = vec![0i32; n];
                argmax_t.read_i32_into(&mut ids, 0);
                out.extend(ids.iter().map(|&t| t as u32));
            }
            ReadBack::Hidden(out) => {
                let n_embd = self.model.hp.n_embd;
                read_f32_staged(&hidden_t, 0, n * n_embd, self.staging.as_mut(), out);
            }
        }
        if self.capture.is_some() {
            (self.chunk_rows, self.chunk_read) = (padded, 0);
        }
        Ok(())
    }

    /// A tree evaluated at `start` by [`decode_tree`](Self::decode_tree) is accepted along
    /// `rows` (its entries on the path, the root first, increasing): move their KV rows and
    /// captured hidden states to positions `start..start + rows.len()` (device copies, no
    /// forward) and keep the target's state after them only. Captured rows are then read as
    /// after a chain verify of the path ([`captured_rows`](Self::captured_rows),
    /// [`captured_on_device`](Self::captured_on_device)).
    pub fn commit_tree_path(&mut self, start: usize, rows: &[usize]) -> Result<()> {
        let ordered = rows.first() == Some(&0) && rows.windows(2).all(|w| w[0] < w[1]);
        let last = rows.last().copied().unwrap_or(0);
        let captured = self.capture.is_none() || last < self.chunk_rows;
        if !ordered || start + last >= self.n_past || !captured {
            bail!(
                "tree commit: rows {rows:?} at {start} are not a path of the last tree verify ({} positions, {} captured rows)",
                self.n_past,
                self.chunk_rows
            );
        }
        let _p = profile::scope("engine.compact_tree");
        if let Some(state) = &self.state {
            // The recurrent state after the path's last node, kept by the tree's graph.
            let tree = match self.pending_tree.take() {
                Some(t) if t.start == start => t,
                _ => {
                    bail!("tree commit at {start}: no tree verify of this hybrid target is pending")
                }
            };
            for k in &tree.kept {
                k.commit(&self.backend, state, last, tree.slots[last]);
            }
        }
        // One copy per tensor for each piece of the path that moves as a block (consecutive
        // entries, same shift), at most `shift` rows long so source and destination never
        // overlap; pieces go in increasing order, so none overwrites a later one's source.
        for (j, r, n) in copy_pieces(rows) {
            for t in self.kv.k.iter().chain(&self.kv.v) {
                let row = t.nb()[1];
                t.copy_bytes_from_on(
                    &self.backend,
                    t,
                    (start + r) * row,
                    (start + j) * row,
                    n * row,
                );
            }
            if let Some(cap) = &self.capture {
                let row = cap.tensor.nb()[1];
                cap.tensor.copy_bytes_from_on(
                    &self.backend,
                    &cap.tensor,
                    r * row,
                    j * row,
                    n * row,
                );
            }
        }
        self.backend.synchronize();
        // Host copies of captured rows are of the tree's order: read them again.
        if self.capture.is_some() {
            self.captured.clear();
            self.chunk_read = 0;
            self.chunk_rows = rows.len();
        }
        // Not `truncate`: a hybrid target's state is already the path's.
        self.n_past = start + rows.len();
        Ok(())
    }
}

/// The copies that move the entries `rows` (increasing, the root first) to `0..rows.len()`: as
/// `(to, from, count)`, in order; entries already in place are skipped.
fn copy_pieces(rows: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (j, &r) in rows.iter().enumerate().filter(|(j, r)| *j != **r) {
        match out.last_mut() {
            // Extends the last piece: the next entry, the same shift, no overlap yet.
            Some((to, from, n)) if *to + *n == j && *from + *n == r && *n < r - j => *n += 1,
            _ => out.push((j, r, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::copy_pieces;

    /// Applying the pieces in order moves every path entry to its place, whatever overlaps.
    #[test]
    fn copy_pieces_compact_any_path() {
        let paths: [&[usize]; 6] = [
            &[0],
            &[0, 1, 2, 3],
            &[0, 2, 3, 4, 5, 6, 7],
            &[0, 5, 6, 9, 10, 11, 12],
            &[0, 1, 4, 8, 9],
            &[0, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        ];
        for rows in paths {
            let mut cells: Vec<usize> = (0..16).collect();
            for (to, from, n) in copy_pieces(rows) {
                assert!(from >= to + n || n == 0, "{rows:?}: overlapping piece");
                let src: Vec<usize> = cells[from..from + n].to_vec();
                cells[to..to + n].copy_from_slice(&src);
            }
            assert_eq!(&cells[..rows.len()], rows, "{rows:?}");
        }
        assert_eq!(
            copy_pieces(&[0, 2, 3, 4, 5]),
            vec![(1, 2, 1), (2, 3, 1), (3, 4, 1), (4, 5, 1)]
        );
        assert_eq!(copy_pieces(&[0, 5, 6, 7]), vec![(1, 5, 3)]);
    }
}
