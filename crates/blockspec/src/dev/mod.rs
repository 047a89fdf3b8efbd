//! Development tools, not part of inference: random-weight models with real shapes
//! ([`synth`]) and PNG charts for `bench --plot` ([`plot`]).

pub mod plot;
pub mod synth;
