//! Built graphs kept by shape and run through one scheduler: the target engine and the DFlash
//! drafter both build a graph per input shape once and reuse it step after step, so that ggml
//! (and ggml-cuda's CUDA graphs) see the same graph again and nothing is rebuilt per token.

use anyhow::{bail, Result};
use ggml::{Graph, Sched};
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

/// A graph's first evaluations are not representative of its cost: the one that builds it, and
/// on a GPU two more (ggml-cuda runs a new graph directly, then captures it as a CUDA graph).
/// On a CPU only the first: counting more as cold there left the rare shapes (a probe's drafts
/// and verifies, a new KV span every 256 positions) without a steady time at all.
pub const COLD_RUNS: u32 = 3;

/// Something built around a ggml graph (its input and output tensors).
pub trait BuiltGraph {
    fn graph(&self) -> Graph;
    /// Host memory held by the graph's metadata (its ggml context), for memory accounting.
    fn host_bytes(&self) -> usize;
}

pub struct GraphCache<K, G> {
    sched: Sched,
    graphs: HashMap<K, G>,
    /// Evaluations of each cached graph since it was built.
    runs: HashMap<K, u32>,
    /// When each cached graph was last prepared (a counter), to evict the least recently used.
    last_use: HashMap<K, u64>,
    uses: u64,
    /// The shape whose graph the scheduler has allocated now (reused without re-planning).
    allocated: Option<K>,
    /// Pin every node to the first backend (GPU backends: otherwise ggml's scheduler may give
    /// nodes without a pre-allocated input no backend and abort).
    pin: bool,
    /// A graph's first this many evaluations are cold: [`COLD_RUNS`] on a GPU, 1 on a CPU.
    cold_runs: u32,
    /// At most this many graphs are kept (prompt lengths vary; decode shapes repeat).
    max_graphs: usize,
    /// For messages: `engine`, `drafter`.
    owner: &'static str,
}

impl<K: Copy + Eq + Hash + Debug, G: BuiltGraph> GraphCache<K, G> {
    /// `gpu`: the scheduler's first backend is a GPU (nodes are pinned to it; graphs stay cold
    /// for [`COLD_RUNS`] evaluations).
    pub fn new(sched: Sched, gpu: bool, max_graphs: usize, owner: &'static str) -> Self {
        GraphCache {
            sched,
            graphs: HashMap::new(),
            runs: HashMap::new(),
            last_use: HashMap::new(),
            uses: 0,
            allocated: None,
            pin: gpu,
            cold_runs: if gpu { COLD_RUNS } else { 1 },
            max_graphs,
            owner,
        }
    }

    /// Reserve compute memory for `graph` (the largest shape), so later allocations fit in it.
    pub fn reserve(&mut self, graph: Graph) -> bool {
        self.sched.reserve(&graph)
    }

    /// Compute-buffer bytes held by the scheduler, on every backend.
    pub fn buffer_bytes(&self) -> usize {
        self.sched.total_buffer_size()
    }

    /// Compute-buffer bytes held on `backend`.
    pub fn buffer_bytes_on(&self, backend: &ggml::Backend) -> usize {
        self.sched.buffer_size(backend)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.graphs.contains_key(key)
    }

    /// Keep a newly built graph for `key`, making room if the cache is full by dropping the
    /// least recently used one (shapes that recur, decode and verify, stay; a tree verify on a
    /// hybrid target has a shape per tree form).
    pub fn insert(&mut self, key: K, graph: G) {
        if self.graphs.len() >= self.max_graphs {
            let oldest = self
                .graphs
                .keys()
                .min_by_key(|k| self.last_use.get(*k).copied().unwrap_or(0))
                .copied();
            if let Some(k) = oldest {
                self.graphs.remove(&k);
                self.runs.remove(&k);
                self.last_use.remove(&k);
                if self.allocated == Some(k) {
                    self.allocated = None;
                }
            }
        }
        self.uses += 1;
        self.last_use.insert(key, self.uses);
        self.graphs.insert(key, graph);
        self.runs.insert(key, 0);
        tracing::debug!(
            "{}: built the graph for {key:?}; {} cached, {:.1} MiB of graph metadata",
            self.owner,
            self.graphs.len(),
            self.host_bytes() as f64 / (1 << 20) as f64
        );
    }

    /// Drop the cached graphs whose key fails `keep` (their host memory is freed).
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.graphs.retain(|k, _| keep(k));
        self.runs.retain(|k, _| keep(k));
        self.last_use.retain(|k, _| keep(k));
        if self.allocated.is_some_and(|k| !keep(&k)) {
            self.allocated = None;
        }
    }

    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    /// Host memory held by the cached graphs' metadata (a ggml context each).
    pub fn host_bytes(&self) -> usize {
        self.graphs.values().map(|g| g.host_bytes()).sum()
    }

    /// The cached graph for `key` (see [`insert`](Self::insert)), allocated in the scheduler's
    /// memory if another graph was. Write its inputs, then call [`compute`](Self::compute).
    pub fn prepare(&mut self, key: K) -> Result<&G> {
        let Some(g) = self.graphs.get(&key) else {
            bail!("{}: no graph built for {key:?}", self.owner);
        };
        let graph = g.graph();
        self.uses += 1;
        self.last_use.insert(key, self.uses);
        if self.allocated != Some(key) {
            let before = self.sched.total_buffer_size();
            self.sched.reset();
            tracing::debug!("{}: allocating the graph for {key:?}", self.owner);
            if self.pin {
                self.sched.pin_to_first_backend(&graph);
            }
            if !self.sched.alloc_graph(&graph) {
                self.allocated = None;
                bail!(
                    "{}: failed to allocate compute memory for {key:?}",
                    self.owner
                );
            }
            self.allocated = Some(key);
            if self.sched.total_buffer_size() != before {
                // Reallocated: every other cached graph now points into freed memory.
                self.graphs.retain(|k, _| *k == key);
                self.runs.retain(|k, _| *k == key);
                self.last_use.retain(|k, _| *k == key);
            }
        }
        Ok(&self.graphs[&key])
    }

    /// Run the prepared graph for `key`. Returns whether it was cold (among its first
    /// evaluations, see [`COLD_RUNS`]), so its time says little about its steady cost.
    pub fn compute(&mut self, key: K) -> Result<bool> {
        if self.allocated != Some(key) {
            bail!("{}: compute of {key:?} without prepare", self.owner);
        }
        let graph = self.graphs[&key].graph();
        self.sched.compute(&graph).map_err(anyhow::Error::msg)?;
        let runs = self.runs.entry(key).or_insert(0);
        *runs += 1;
        Ok(*runs <= self.cold_runs)
    }

    pub fn get(&self, key: &K) -> Option<&G> {
        self.graphs.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ggml::{Backend, Context};
    use std::sync::Arc;

    struct Dummy {
        _ctx: Context,
        graph: Graph,
    }

    impl BuiltGraph for Dummy {
        fn graph(&self) -> Graph {
            self.graph.clone()
        }
        fn host_bytes(&self) -> usize {
            0
        }
    }

    fn dummy() -> Dummy {
        let mut ctx = Context::new(8, 8);
        let graph = ctx.new_graph(8);
        Dummy { _ctx: ctx, graph }
    }

    #[test]
    fn a_full_cache_drops_the_least_recently_used_graph() {
        let backend = Arc::new(Backend::cpu(1));
        let sched = Sched::new(backend.sched_backends(), 64);
        let mut c: GraphCache<u32, Dummy> = GraphCache::new(sched, false, 3, "test");
        for k in 0..3 {
            c.insert(k, dummy());
        }
        // 0 is used again; 1 is then the least recently used.
        c.prepare(0).expect("prepare");
        c.insert(3, dummy());
        assert!(c.contains(&0) && !c.contains(&1) && c.contains(&2) && c.contains(&3));
        c.insert(4, dummy());
        assert!(c.contains(&0) && !c.contains(&2) && c.contains(&3) && c.contains(&4));
        assert_eq!(c.len(), 3);
    }
}
