//! N-gram prompt lookup: no model at all. The last few tokens are looked up in the token history
//! (prompt + output so far); if they occurred before, the tokens that followed that occurrence
//! are proposed. It pays off where the output repeats its input: code edits, quoting, extraction.

use super::{DraftCost, Drafter, Features};
use anyhow::{bail, Result};

pub struct NgramDrafter {
    /// Longest n-gram looked up; shorter ones (down to `min_n`) are tried when it is not found.
    max_n: usize,
    min_n: usize,
    /// The longest verify it fills: drafts + 1.
    max_verify_len: usize,
    /// Every committed token of the sequence, prompt included.
    history: Vec<u32>,
}

impl NgramDrafter {
    /// `max_n`: the n-gram size to look up (falling back to shorter ones, down to 2 or `max_n`
    /// if smaller); `max_verify_len`: the longest verify (drafts + 1).
    pub fn new(max_n: usize, max_verify_len: usize) -> Result<NgramDrafter> {
        if max_n == 0 {
            bail!("--spec-ngram-size-n must be at least 1");
        }
        if max_verify_len < 2 {
            bail!("n-gram lookup needs a block of at least 2 (one draft + the target's token)");
        }
        Ok(NgramDrafter {
            max_n,
            min_n: max_n.min(2),
            max_verify_len,
            history: Vec::new(),
        })
    }

    /// The tokens that followed the most recent earlier occurrence of the n-gram ending with
    /// `last`, at most `want` of them.
    fn lookup(&self, last: u32, want: usize) -> Vec<u32> {
        let h = &self.history;
        for n in (self.min_n..=self.max_n).rev() {
            // The pattern: the last n-1 history tokens, then `last` (not in the history yet).
            if h.len() < n {
                continue;
            }
            let pat_head = &h[h.len() + 1 - n..];
            // An earlier occurrence ends at index e (pattern = h[e+1-n..=e]), e <= len - 2;
            // the most recent one wins.
            for e in (n - 1..h.len() - 1).rev() {
                if h[e] == last && h[e + 1 - n..e] == *pat_head {
                    // Continue as the sequence did after the match. Where that runs into the
                    // present (a short period), it continues with `last` and then with the
                    // drafts themselves: the sequence repeats with period len - e.
                    let mut out: Vec<u32> = Vec::with_capacity(want);
                    for i in 0..want {
                        let idx = e + 1 + i;
                        let t = match idx.cmp(&h.len()) {
                            std::cmp::Ordering::Less => h[idx],
                            std::cmp::Ordering::Equal => last,
                            std::cmp::Ordering::Greater => out[idx - h.len() - 1],
                        };
                        out.push(t);
                    }
                    return out;
                }
            }
        }
        Vec::new()
    }
}

impl Drafter for NgramDrafter {
    fn name(&self) -> &'static str {
        "ngram"
    }
    fn max_verify_len(&self) -> usize {
        self.max_verify_len
    }
    fn cost(&self) -> DraftCost {
        DraftCost::PerStep
    }
    fn begin(&mut self, prompt: &[u32], _features: &[f32]) -> Result<()> {
        self.history.clear();
        self.history.extend_from_slice(prompt);
        Ok(())
    }
    fn draft(&mut self, last: u32, len: usize) -> Result<Vec<u32>> {
        Ok(self.lookup(last, len.saturating_sub(1)))
    }
    fn commit(&mut self, tokens: &[u32], _features: Features) -> Result<()> {
        self.history.extend_from_slice(tokens);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(prompt: &[u32], n: usize) -> NgramDrafter {
        let mut d = NgramDrafter::new(n, 8).unwrap();
        d.begin(prompt, &[]).unwrap();
        d
    }

    #[test]
    fn proposes_the_continuation_of_the_latest_match() {
        // "1 2 3 4 5 ... 1 2 3 9 ..." then the pattern (2, 3) -> the most recent continuation 9.
        let mut d = drafter(&[1, 2, 3, 4, 5, 1, 2, 3, 9, 7, 2], 2);
        assert_eq!(d.draft(3, 4).unwrap(), vec![9, 7, 2]);
    }

    #[test]
    fn falls_back_to_shorter_ngrams_and_reports_no_match() {
        let mut d = drafter(&[5, 6, 7, 8, 1, 2], 3);
        // (1, 2, 6) never occurred; (2, 6) neither; min n = 2 -> nothing.
        assert!(d.draft(6, 4).unwrap().is_empty());
        // (1, 2, 5) no, (2, 5) no... (x, 5): with n = 3 and min 2 still nothing.
        assert!(d.draft(9, 4).unwrap().is_empty());
        // Commit 5 6: history ... 1 2 5 6, then `last` 7: (5, 6, 7) occurred at the start.
        d.commit(&[5, 6], Features::Host(&[])).unwrap();
        assert_eq!(d.draft(7, 3).unwrap(), vec![8, 1]);
    }

    #[test]
    fn periodic_continuation_runs_into_the_present() {
        // History "4 4 4", last 4: the newest earlier "4 4" ends at index 1; its continuation is
        // h[2] = 4, then the present (`last` = 4) repeats.
        let mut d = drafter(&[4, 4, 4], 2);
        assert_eq!(d.draft(4, 5).unwrap(), vec![4, 4, 4, 4]);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(NgramDrafter::new(0, 8).is_err());
        assert!(NgramDrafter::new(3, 1).is_err());
    }
}
