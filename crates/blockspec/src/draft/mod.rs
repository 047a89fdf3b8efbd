//! Drafters: where speculative tokens come from.

pub mod dflash;
