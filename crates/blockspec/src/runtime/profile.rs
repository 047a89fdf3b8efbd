//! Opt-in phase timers: with `BLOCKSPEC_PROFILE=1`, named scopes (input upload, graph compute,
//! read-back, ...) add their wall time to process-wide totals, which `bench` prints. Every ggml
//! compute call waits for its backend, so host wall time per phase is the phase's real cost even
//! on a GPU. Off (the default), a scope costs one relaxed atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// 0: not read yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
/// (name, total ms, count), in first-seen order.
static TOTALS: Mutex<Vec<(&'static str, f64, u64)>> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on =
                std::env::var_os("BLOCKSPEC_PROFILE").is_some_and(|v| v != "0" && !v.is_empty());
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Times from now until the guard drops, under `name`.
pub fn scope(name: &'static str) -> Scope {
    Scope {
        name,
        start: enabled().then(Instant::now),
    }
}

pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(t) = self.start {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            match totals.iter_mut().find(|(n, _, _)| *n == self.name) {
                Some(e) => {
                    e.1 += ms;
                    e.2 += 1;
                }
                None => totals.push((self.name, ms, 1)),
            }
        }
    }
}

/// Forget the totals (between benchmark phases).
pub fn reset() {
    TOTALS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The totals so far: (name, total ms, count).
pub fn totals() -> Vec<(&'static str, f64, u64)> {
    TOTALS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn scopes_add_up_when_enabled() {
        super::STATE.store(2, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..3 {
            let _s = super::scope("test.phase");
        }
        let t = super::totals();
        let e = t.iter().find(|e| e.0 == "test.phase").expect("recorded");
        assert_eq!(e.2, 3);
        assert!(e.1 >= 0.0);
    }
}
