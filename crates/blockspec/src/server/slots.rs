//! Slots: one worker thread per slot, each with its own session (KV cache, drafter, length
//! policy, prompt cache), fed from one bounded queue. A job goes to the idle slot whose cache
//! shares the longest prefix with its prompt, so a conversation's next turn finds its KV.
//!
//! The engine is synchronous and CPU-bound, so generation never runs on the async runtime:
//! a job carries a channel back to its HTTP handler, which streams or collects what arrives.

use super::metrics::Metrics;
use super::openai::ApiError;
use crate::decode::generate::{GenerateOptions, Generation, LogprobSink, StopReason, TokenLogprob};
use crate::decode::sampling::{Sampler, SamplingParams};
use crate::decode::spec::SpecStats;
use crate::session::{LoadedModel, Session};
use anyhow::Result;
use axum::http::StatusCode;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// One generation of a job: its prompt and sampling. A request for `n` choices is `n` runs
/// of one prompt (their seeds differ); a list of prompts gives runs for each.
#[derive(Clone, Debug)]
pub struct Run {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
}

/// What a job asks its slot to do.
pub enum Work {
    /// Generations, one after another on the slot (each reuses the KV of what it shares with
    /// the one before when the job reuses prompts).
    Generate(Vec<Run>),
    /// The normed hidden states of every token of each input (embeddings).
    Embed(Vec<Vec<u32>>),
}

impl Work {
    /// The prompt the slot is chosen by (the first run's or input's).
    fn first_prompt(&self) -> &[u32] {
        match self {
            Work::Generate(runs) => runs.first().map_or(&[], |r| &r.prompt),
            Work::Embed(inputs) => inputs.first().map_or(&[], |v| v),
        }
    }
}

/// A request for a slot.
pub struct Job {
    pub work: Work,
    /// `cancel` is set by [`SlotPool::submit`].
    pub opts: GenerateOptions,
    /// Reuse the KV of the common prefix with the slot's previous prompt.
    pub reuse_prompt: bool,
    /// Send text pieces as they are generated (streaming responses).
    pub stream_text: bool,
    pub events: UnboundedSender<Event>,
    /// QUEUED, then RUNNING (a worker took it) or ABANDONED (its client left first).
    state: Arc<AtomicU8>,
}

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const ABANDONED: u8 = 2;

impl Job {
    pub fn new(
        work: Work,
        opts: GenerateOptions,
        reuse_prompt: bool,
        stream_text: bool,
        events: UnboundedSender<Event>,
    ) -> Job {
        Job {
            work,
            opts,
            reuse_prompt,
            stream_text,
            events,
            state: Arc::new(AtomicU8::new(QUEUED)),
        }
    }

    /// What `/slots` shows of the job while it runs and after.
    fn task_info(&self, id: u64) -> SlotTask {
        let (kind, sampling, n_runs) = match &self.work {
            Work::Generate(runs) => (
                "completion",
                runs.first().map(|r| r.sampling.clone()),
                runs.len(),
            ),
            Work::Embed(inputs) => ("embedding", None, inputs.len()),
        };
        SlotTask {
            id,
            kind,
            sampling,
            max_tokens: self.opts.max_tokens,
            n_stop: self.opts.stop.len(),
            ignore_eos: self.opts.ignore_eos,
            n_runs,
            n_prompt_tokens: self.work.first_prompt().len(),
        }
    }
}

/// A slot's current (or last) job as `/slots` shows it: no prompt text, no stop strings.
#[derive(Clone, Debug)]
pub struct SlotTask {
    pub id: u64,
    /// "completion" or "embedding".
    pub kind: &'static str,
    pub sampling: Option<SamplingParams>,
    pub max_tokens: Option<usize>,
    pub n_stop: usize,
    pub ignore_eos: bool,
    /// Generations (choices) or inputs of the job.
    pub n_runs: usize,
    pub n_prompt_tokens: usize,
}

/// One slot as `/slots` shows it.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    pub id: usize,
    pub is_processing: bool,
    /// Tokens whose KV the slot's cache holds.
    pub n_cached: usize,
    pub task: Option<SlotTask>,
}

/// The hidden states of one embeddings input: `n_tokens x n_embd`, token-major.
pub struct Embedded {
    pub index: usize,
    pub rows: Vec<f32>,
    pub n_tokens: usize,
}

/// One run of a job, finished.
pub struct Finished {
    pub generation: Generation,
    pub spec: Option<SpecStats>,
    pub slot: usize,
    /// The run's place in its job.
    pub index: usize,
}

/// What a job sends back; `usize` fields are the run's place in the job. The channel closes
/// when the job is over.
pub enum Event {
    /// A generated token's log-probabilities (streamed requests that asked for them), sent
    /// before the token's text.
    Logprob(usize, TokenLogprob),
    Text(usize, String),
    Done(Box<Finished>),
    Embedding(Box<Embedded>),
    Failed(String),
}

/// Cancels its job when dropped: a handler that goes away (its client disconnected) stops its
/// generation, and a job still waiting gives its queue place back at once.
pub struct CancelOnDrop {
    cancel: Arc<AtomicBool>,
    state: Arc<AtomicU8>,
    pool: Arc<SlotPool>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if self
            .state
            .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.pool.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.pool.update_metrics();
        }
    }
}

pub struct SlotPool {
    dispatch: Mutex<Dispatch>,
    /// Wakes workers when a job was assigned to one of them.
    assigned: Condvar,
    n_slots: usize,
    /// Jobs that may wait for a slot before new ones are refused (503).
    max_queued: usize,
    /// Jobs submitted and not finished (queued + running).
    in_flight: AtomicUsize,
    running: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Jobs waiting, and what each slot is doing.
struct Dispatch {
    queue: VecDeque<Job>,
    idle: Vec<bool>,
    /// The job handed to a slot that has not picked it up yet.
    next: Vec<Option<Job>>,
    /// The tokens each slot's cache holds, and how many of them were its last prompt
    /// (published after every job).
    cached: Vec<Vec<u32>>,
    cached_prompt_len: Vec<usize>,
    /// When each slot was last given a job (a counter), for least-recently-used choice.
    last_used: Vec<u64>,
    /// Each slot's current or last job, for `/slots`.
    tasks: Vec<Option<SlotTask>>,
    jobs_assigned: u64,
    closed: bool,
}

impl Dispatch {
    /// Hand queued jobs to idle slots: to a slot whose last prompt the new one continues (a
    /// conversation's next turn: its whole previous prompt is a prefix), the longest such
    /// prefix first; otherwise to the least recently used slot, so that a new conversation does
    /// not evict another's cache merely because they share a system prompt.
    fn assign(&mut self) -> bool {
        let mut any = false;
        while self.idle.iter().any(|&i| i) {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if job.state.load(Ordering::Acquire) == ABANDONED {
                continue;
            }
            let prefix = |slot: usize| {
                self.cached[slot]
                    .iter()
                    .zip(job.work.first_prompt())
                    .take_while(|(a, b)| a == b)
                    .count()
            };
            let reuse = |slot: usize| {
                let p = prefix(slot);
                if p > 0 && p >= self.cached_prompt_len[slot] {
                    p
                } else {
                    0
                }
            };
            let slot = (0..self.idle.len())
                .filter(|&s| self.idle[s])
                .max_by_key(|&s| (reuse(s), std::cmp::Reverse(self.last_used[s])))
                .expect("an idle slot exists");
            self.jobs_assigned += 1;
            self.last_used[slot] = self.jobs_assigned;
            self.tasks[slot] = Some(job.task_info(self.jobs_assigned));
            self.idle[slot] = false;
            self.next[slot] = Some(job);
            any = true;
        }
        any
    }
}

impl SlotPool {
    /// Start `n_slots` workers, each making its session; returns once all are ready.
    pub fn start(
        model: Arc<LoadedModel>,
        n_slots: usize,
        max_queued: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<SlotPool>> {
        let pool = Arc::new(SlotPool {
            dispatch: Mutex::new(Dispatch {
                queue: VecDeque::new(),
                idle: vec![true; n_slots],
                next: (0..n_slots).map(|_| None).collect(),
                cached: vec![Vec::new(); n_slots],
                cached_prompt_len: vec![0; n_slots],
                last_used: vec![0; n_slots],
                tasks: vec![None; n_slots],
                jobs_assigned: 0,
                closed: false,
            }),
            assigned: Condvar::new(),
            n_slots,
            max_queued,
            in_flight: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            metrics,
        });
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        for slot in 0..n_slots {
            let model = model.clone();
            let pool = pool.clone();
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn(move || {
                    let session = match new_session(&model, n_slots) {
                        Ok(s) => {
                            let _ = ready.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e.context(format!("slot {slot}"))));
                            pool.lock().closed = true;
                            return;
                        }
                    };
                    worker(slot, model, session, pool);
                })?;
        }
        drop(ready_tx);
        for _ in 0..n_slots {
            match ready_rx.recv() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("a slot thread ended while starting"),
            }
        }
        Ok(pool)
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// What each slot is doing, for `/slots`.
    pub fn slots(&self) -> Vec<SlotInfo> {
        let d = self.lock();
        (0..self.n_slots)
            .map(|id| SlotInfo {
                id,
                is_processing: !d.idle[id] || d.next[id].is_some(),
                n_cached: d.cached[id].len(),
                task: d.tasks[id].clone(),
            })
            .collect()
    }

    /// (running, waiting) jobs.
    pub fn load(&self) -> (usize, usize) {
        let running = self.running.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        (running, in_flight.saturating_sub(running))
    }

    /// Queue a job; refused with 503 when every slot is busy and the queue is full. Returns
    /// the guard that cancels the job when the caller drops it.
    pub fn submit(self: &Arc<Self>, mut job: Job) -> Result<CancelOnDrop, ApiError> {
        let capacity = self.n_slots + self.max_queued;
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: all {} slots are in use and {} requests are waiting; try again later",
                    self.n_slots, self.max_queued
                ),
            ));
        }
        let cancel = Arc::new(AtomicBool::new(false));
        job.opts.cancel = Some(cancel.clone());
        let state = job.state.clone();
        {
            let mut d = self.lock();
            if d.closed {
                drop(d);
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                ));
            }
            // Jobs whose clients left while waiting are dropped here (their places were given
            // back already), so the queue never holds more than the live ones.
            d.queue
                .retain(|j| j.state.load(Ordering::Acquire) != ABANDONED);
            d.queue.push_back(job);
            if d.assign() {
                self.assigned.notify_all();
            }
        }
        self.update_metrics();
        Ok(CancelOnDrop {
            cancel,
            state,
            pool: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot finished its job (`prompt_len`: that job's prompt; None: it skipped a job whose
    /// client had left): publish its cache, mark it idle, hand out queued work.
    fn slot_idle(&self, slot: usize, cached: &[u32], prompt_len: Option<usize>) {
        let mut d = self.lock();
        d.cached[slot].clear();
        d.cached[slot].extend_from_slice(cached);
        if let Some(n) = prompt_len {
            d.cached_prompt_len[slot] = n;
        }
        d.idle[slot] = true;
        if d.assign() {
            self.assigned.notify_all();
        }
    }

    fn update_metrics(&self) {
        let (running, waiting) = self.load();
        self.metrics.set_queue(running, waiting);
    }
}

/// A slot's session computes on its own backend; with several slots on a CPU, each gets an
/// equal share of the cores unless -t says otherwise (set by the caller).
fn new_session(model: &LoadedModel, n_slots: usize) -> Result<Session> {
    if n_slots == 1 {
        return model.new_session();
    }
    let backend = Arc::new(model.open_backend()?);
    model.new_session_on(backend)
}

fn worker(slot: usize, model: Arc<LoadedModel>, mut session: Session, pool: Arc<SlotPool>) {
    loop {
        let job = {
            let mut d = pool.lock();
            loop {
                if let Some(j) = d.next[slot].take() {
                    break j;
                }
                d = pool.assigned.wait(d).unwrap_or_else(|p| p.into_inner());
            }
        };
        let cancel = job.opts.cancel.clone().unwrap_or_default();
        if job
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The client left while the job waited (its place was given back then).
            pool.slot_idle(slot, session.cached_tokens(), None);
            continue;
        }
        if cancel.load(Ordering::Relaxed) || job.events.is_closed() {
            pool.in_flight.fetch_sub(1, Ordering::AcqRel);
            pool.update_metrics();
            pool.slot_idle(slot, session.cached_tokens(), None);
            continue;
        }
        pool.running.fetch_add(1, Ordering::AcqRel);
        pool.update_metrics();
        let last_prompt_len = match &job.work {
            Work::Generate(runs) => runs.last().map_or(0, |r| r.prompt.len()),
            Work::Embed(_) => 0,
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| match &job.work {
            Work::Generate(runs) => run_generations(slot, &model, &mut session, &pool, &job, runs),
            Work::Embed(inputs) => run_embeddings(&mut session, &job, inputs),
        }));
        match run {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                session.clear_cache();
                let _ = job.events.send(Event::Failed(format!("{e:#}")));
            }
            Err(_) => {
                tracing::error!("slot {slot}: generation panicked; the slot's session is rebuilt");
                let _ = job.events.send(Event::Failed(
                    "internal error during generation (the slot was reset)".to_string(),
                ));
                match new_session(&model, pool.n_slots) {
                    Ok(s) => session = s,
                    Err(e) => {
                        // The slot stays busy for good; the others keep serving.
                        tracing::error!("slot {slot}: cannot rebuild its session: {e:#}");
                        pool.running.fetch_sub(1, Ordering::AcqRel);
                        pool.in_flight.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                }
            }
        }
        drop(job);
        session.drop_prompt_graphs();
        pool.running.fetch_sub(1, Ordering::AcqRel);
        pool.in_flight.fetch_sub(1, Ordering::AcqRel);
        pool.update_metrics();
        pool.slot_idle(slot, session.cached_tokens(), Some(last_prompt_len));
    }
}

/// A job's generations, one after another; each sends its text (when streaming) and then its
/// result. Stops early when the job is cancelled.
fn run_generations(
    slot: usize,
    model: &LoadedModel,
    session: &mut Session,
    pool: &SlotPool,
    job: &Job,
    runs: &[Run],
) -> Result<()> {
    let cancel = job.opts.cancel.clone().unwrap_or_default();
    for (index, r) in runs.iter().enumerate() {
        if index > 0 && cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut opts = job.opts.clone();
        if job.stream_text && opts.logprobs.is_some() {
            let tx = job.events.clone();
            opts.on_logprob = Some(LogprobSink(Arc::new(move |lp: &TokenLogprob| {
                let _ = tx.send(Event::Logprob(index, lp.clone()));
            })));
        }
        let mut sampler = Sampler::new(r.sampling.clone());
        let tx = &job.events;
        let on_text = |piece: &str| {
            let gone = if job.stream_text {
                tx.send(Event::Text(index, piece.to_string())).is_err()
            } else {
                tx.is_closed()
            };
            if gone {
                cancel.store(true, Ordering::Relaxed);
            }
        };
        let (generation, spec) = session.generate(
            &model.tokenizer,
            &mut sampler,
            &r.prompt,
            &opts,
            job.reuse_prompt,
            on_text,
        )?;
        let cancelled = generation.stop == StopReason::Cancelled;
        pool.metrics.record(&generation, spec.as_ref(), cancelled);
        let _ = job.events.send(Event::Done(Box::new(Finished {
            generation,
            spec,
            slot,
            index,
        })));
    }
    Ok(())
}

/// A job's embeddings inputs, one after another.
fn run_embeddings(session: &mut Session, job: &Job, inputs: &[Vec<u32>]) -> Result<()> {
    let cancel = job.opts.cancel.clone().unwrap_or_default();
    for (index, tokens) in inputs.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) || job.events.is_closed() {
            break;
        }
        let rows = session.hidden_states(tokens)?;
        let _ = job.events.send(Event::Embedding(Box::new(Embedded {
            index,
            rows,
            n_tokens: tokens.len(),
        })));
    }
    Ok(())
}
