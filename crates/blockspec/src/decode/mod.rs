//! Turning logits into tokens: [`sampling`], plain [`generate`]-ion, the drafters ([`draft`])
//! and speculative decoding ([`spec`]).

pub mod constrain;
pub mod draft;
pub mod generate;
pub mod sampling;
pub mod spec;
