//! The influence engine: exact second-order autograd primitives on a supernet ([`probe`]),
//! inverse-Hessian-vector products ([`ihvp`], [`fisher`]), and the selection criteria
//! ([`criteria`]): magnitude, drop, DARTS-IF and DARTS-IM (paper.md §2–§6).

pub mod criteria;
pub mod fisher;
pub mod flat;
pub mod ihvp;
pub mod kfac;
pub mod probe;
pub mod saved;

pub use criteria::{Context, Outcome, Resumable, Subject};
pub use probe::{EvalSet, Leaf, Probe, Timings};
