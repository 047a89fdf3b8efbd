//! A drafter for tree tests that knows the right continuation.

use blockspec::decode::draft::{DraftCost, DraftTopK, Drafter, Features};

/// Knows the plain output and proposes, per depth, the true next token at a pseudo-random rank
/// (often the first, sometimes lower, sometimes absent) among distinct decoys. Keeps the target
/// features it is given, to compare with a prefill of the same tokens.
pub struct Oracle {
    pub truth: Vec<u32>,
    pub known: usize,
    pub depth: usize,
    pub n_vocab: u32,
    pub rng: u64,
    pub layers: Vec<usize>,
    pub feats: Vec<f32>,
}

impl Oracle {
    fn next(&mut self) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.rng >> 33
    }
}

impl Drafter for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn max_verify_len(&self) -> usize {
        self.depth + 1
    }
    fn target_layers(&self) -> &[usize] {
        &self.layers
    }
    fn cost(&self) -> DraftCost {
        DraftCost::PerStep
    }
    fn begin(&mut self, prompt: &[u32], features: &[f32]) -> anyhow::Result<()> {
        self.known = prompt.len();
        self.feats = features.to_vec();
        Ok(())
    }
    /// The chain: the top-ranked candidate per depth.
    fn draft(&mut self, last: u32, len: usize) -> anyhow::Result<Vec<u32>> {
        let c = self.draft_top_k(last, 2)?.expect("candidates");
        Ok((0..c.depth().min(len.saturating_sub(1)))
            .map(|d| c.id(d + 1, 0))
            .collect())
    }
    fn draft_top_k(&mut self, _last: u32, k: usize) -> anyhow::Result<Option<DraftTopK>> {
        let mut c = DraftTopK {
            k,
            ..Default::default()
        };
        for d in 1..=self.depth {
            let truth = self.truth.get(self.known + d).copied().unwrap_or(0);
            let rank = match self.next() % 20 {
                0..=10 => 0,
                11..=14 => 1,
                15..=16 => (self.next() as usize) % k,
                _ => k, // absent
            };
            let mut decoy = (truth + 1 + (self.next() % 50) as u32) % self.n_vocab;
            for r in 0..k {
                if r == rank {
                    c.ids.push(truth);
                } else {
                    while decoy == truth || c.ids[(d - 1) * k..].contains(&decoy) {
                        decoy = (decoy + 1) % self.n_vocab;
                    }
                    c.ids.push(decoy);
                }
                c.logprobs.push(-0.2 - r as f32 * 0.5 - (d as f32) * 0.01);
            }
        }
        Ok(Some(c))
    }
    fn commit(&mut self, tokens: &[u32], features: Features) -> anyhow::Result<()> {
        self.known += tokens.len();
        match features {
            Features::Host(f) => self.feats.extend_from_slice(f),
            Features::Device(rows) => rows.read_into(&mut self.feats),
        }
        Ok(())
    }
}
