//! How a hybrid target's recurrent layers evaluate a draft tree (DDTree).
//!
//! In a chain every token's recurrent state follows from the previous token's. In a tree each
//! node's follows from its parent's, so the recurrent layers go down the tree one depth level
//! at a time: the nodes of a level are independent sequences of one token each (ggml's Gated
//! DeltaNet and causal convolution take several sequences at once), started from their
//! parents' states of the level above. Each node's step is the very arithmetic a chain would
//! run for it, so the state after any node is the one a chain through its path computes.
//!
//! Everything a graph needs to know of the tree's layout travels in one I32 input, the
//! [`TreeLevels::index`] (laid out by [`TreeLevels`]); only the level widths shape the graph.

use anyhow::{bail, Result};

/// The most levels a tree batch may have (the root's level included).
pub const MAX_TREE_LEVELS: usize = 33;

/// The level widths of a tree batch (rows at depth 0, 1, ...; the root's level has one row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TreeLevels {
    widths: [u8; MAX_TREE_LEVELS],
    len: u8,
}

/// Where one row of a tree batch sits among the levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelSlot {
    pub level: usize,
    /// Index among its level's rows.
    pub index: usize,
}

impl TreeLevels {
    /// The levels of a batch whose row `i` has parent row `parents[i]` (row 0 is the root, its
    /// own parent) and depth `depths[i]`; every parent comes before its children.
    pub fn of(parents: &[usize], depths: &[usize]) -> Result<TreeLevels> {
        let n = parents.len();
        if n == 0 || depths.len() != n || depths[0] != 0 {
            bail!("tree levels: {n} parents, {} depths", depths.len());
        }
        if n > u8::MAX as usize {
            bail!("tree levels: {n} rows (at most {})", u8::MAX);
        }
        let mut widths = [0u8; MAX_TREE_LEVELS];
        for i in 0..n {
            let d = depths[i];
            let p = parents[i];
            let ok = if i == 0 {
                p == 0
            } else {
                p < i && d == depths[p] + 1
            };
            if !ok {
                bail!("tree levels: row {i} has parent {p} and depth {d}");
            }
            if d >= MAX_TREE_LEVELS {
                bail!("tree levels: depth {d} (at most {})", MAX_TREE_LEVELS - 1);
            }
            widths[d] += 1;
        }
        let len = widths.iter().take_while(|&&w| w > 0).count();
        if widths[len..].iter().any(|&w| w > 0) {
            bail!("tree levels: a depth without rows above a deeper one");
        }
        Ok(TreeLevels {
            widths,
            len: len as u8,
        })
    }

    /// Rows per level, the root's level first.
    pub fn widths(&self) -> impl Iterator<Item = usize> + '_ {
        self.widths[..self.len as usize].iter().map(|&w| w as usize)
    }

    pub fn n_levels(&self) -> usize {
        self.len as usize
    }

    pub fn n_rows(&self) -> usize {
        self.widths().sum()
    }

    /// Offset in the index of level `l`'s rows (batch row numbers, increasing).
    pub fn rows_at(&self, l: usize, d_conv: usize) -> usize {
        d_conv * self.n_rows() + self.widths().take(l).sum::<usize>()
    }

    /// Offset in the index of level `l`'s (>= 1) parents, as indices among level `l - 1`'s rows.
    pub fn parents_at(&self, l: usize, d_conv: usize) -> usize {
        assert!(l >= 1);
        let n = self.n_rows();
        d_conv * n + n + self.widths().skip(1).take(l - 1).sum::<usize>()
    }

    /// Offset in the index of each batch row's place in the level-by-level order.
    pub fn unpermute_at(&self, d_conv: usize) -> usize {
        let n = self.n_rows();
        d_conv * n + n + (n - 1)
    }

    /// Length of the index.
    pub fn index_len(&self, d_conv: usize) -> usize {
        self.unpermute_at(d_conv) + self.n_rows()
    }

    /// Each row's level and index within it.
    pub fn slots(depths: &[usize]) -> Vec<LevelSlot> {
        let mut seen = [0usize; MAX_TREE_LEVELS];
        depths
            .iter()
            .map(|&d| {
                let index = seen[d];
                seen[d] += 1;
                LevelSlot { level: d, index }
            })
            .collect()
    }

    /// The I32 index a tree graph reads (see the offsets above):
    /// - per row, the `d_conv` columns of its convolution window, oldest first, in the
    ///   columns `[conv state (d_conv - 1) | the batch's rows]`: its ancestors' rows and its
    ///   own, and the committed state's columns above the root;
    /// - per level, its rows; per level below the root, each row's parent among the level
    ///   above; per row, its place in the level-by-level order.
    pub fn index(&self, parents: &[usize], depths: &[usize], d_conv: usize) -> Vec<i32> {
        let n = self.n_rows();
        assert_eq!(parents.len(), n);
        let slots = Self::slots(depths);
        let mut out = Vec::with_capacity(self.index_len(d_conv));
        let state_cols = d_conv - 1;
        for i in 0..n {
            // Newest first: the row, its parent, ... the root, then the state's columns.
            let mut window = Vec::with_capacity(d_conv);
            let mut j = i;
            loop {
                window.push((state_cols + j) as i32);
                if j == 0 || window.len() == d_conv {
                    break;
                }
                j = parents[j];
            }
            let mut col = state_cols;
            while window.len() < d_conv {
                col -= 1;
                window.push(col as i32);
            }
            out.extend(window.iter().rev());
        }
        let mut by_level: Vec<Vec<usize>> = vec![Vec::new(); self.n_levels()];
        for (i, s) in slots.iter().enumerate() {
            by_level[s.level].push(i);
        }
        for rows in &by_level {
            out.extend(rows.iter().map(|&r| r as i32));
        }
        for rows in by_level.iter().skip(1) {
            out.extend(rows.iter().map(|&r| slots[parents[r]].index as i32));
        }
        let mut before = [0usize; MAX_TREE_LEVELS];
        let mut acc = 0;
        for (l, w) in self.widths().enumerate() {
            before[l] = acc;
            acc += w;
        }
        out.extend(slots.iter().map(|s| (before[s.level] + s.index) as i32));
        debug_assert_eq!(out.len(), self.index_len(d_conv));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_a_small_tree() {
        // root 0; 1, 2 children of 0; 3 child of 1; 4 child of 3.
        let parents = [0, 0, 0, 1, 3];
        let depths = [0, 1, 1, 2, 3];
        let t = TreeLevels::of(&parents, &depths).unwrap();
        assert_eq!(t.widths().collect::<Vec<_>>(), vec![1, 2, 1, 1]);
        let d_conv = 4;
        let idx = t.index(&parents, &depths, d_conv);
        // Windows: state columns 0..3, row i at column 3 + i.
        assert_eq!(&idx[0..4], &[0, 1, 2, 3]); // root: 3 state columns, itself
        assert_eq!(&idx[4..8], &[1, 2, 3, 4]); // row 1: state 1, 2, root, itself
        assert_eq!(&idx[8..12], &[1, 2, 3, 5]); // row 2: sibling not in its window
        assert_eq!(&idx[12..16], &[2, 3, 4, 6]); // row 3: state 2, root, 1, itself
        assert_eq!(&idx[16..20], &[3, 4, 6, 7]); // row 4: root, 1, 3, itself
        let r = t.rows_at(0, d_conv);
        assert_eq!(&idx[r..r + 5], &[0, 1, 2, 3, 4]);
        assert_eq!(t.rows_at(2, d_conv), r + 3);
        let p = t.parents_at(1, d_conv);
        // Level 1's parents (root: 0), level 2's (row 1: index 0 of level 1), level 3's.
        assert_eq!(&idx[p..p + 4], &[0, 0, 0, 0]);
        assert_eq!(t.parents_at(3, d_conv), p + 3);
        let u = t.unpermute_at(d_conv);
        assert_eq!(&idx[u..], &[0, 1, 2, 3, 4]);
        assert_eq!(idx.len(), t.index_len(d_conv));
    }

    #[test]
    fn rows_out_of_level_order_are_placed() {
        // Best-first order: 1 (depth 1), 2 child of 1 (depth 2), 3 sibling of 1 (depth 1).
        let parents = [0, 0, 1, 0];
        let depths = [0, 1, 2, 1];
        let t = TreeLevels::of(&parents, &depths).unwrap();
        assert_eq!(t.widths().collect::<Vec<_>>(), vec![1, 2, 1]);
        let idx = t.index(&parents, &depths, 2);
        let r = t.rows_at(0, 2);
        assert_eq!(&idx[r..r + 4], &[0, 1, 3, 2]);
        let p = t.parents_at(2, 2);
        assert_eq!(idx[p], 0); // row 2's parent is row 1, index 0 of level 1
        let u = t.unpermute_at(2);
        assert_eq!(&idx[u..], &[0, 1, 3, 2]);
        let s = TreeLevels::slots(&depths);
        assert_eq!(s[3], LevelSlot { level: 1, index: 1 });
    }

    #[test]
    fn bad_trees_are_errors() {
        assert!(TreeLevels::of(&[0, 1], &[0, 1]).is_err()); // own parent
        assert!(TreeLevels::of(&[0, 0], &[0, 2]).is_err()); // depth skips
        assert!(TreeLevels::of(&[], &[]).is_err());
    }
}
