//! dartsif-dist: DARTS supernet search with influence-based operation selection, distributed
//! over MPI ranks.
//!
//! One job per module: [`comm`] (collectives), [`data`], [`space`] (search spaces and
//! genotypes), [`supernet`], [`search`] (bi-level training), [`select`] (discretisation),
//! [`network`] and [`train`] (the selected architecture from scratch), [`checkpoint`],
//! [`report`], [`cli`].

pub mod app;
pub mod checkpoint;
pub mod choice;
pub mod comm;
pub mod config;
pub mod control;
pub mod data;
pub mod device;
pub mod error;
pub mod experiment;
pub mod fsutil;
pub mod influence;
pub mod loss;
pub mod network;
pub mod ops;
pub mod optim;
pub mod progress;
pub mod report;
pub mod rng;
pub mod search;
pub mod select;
pub mod space;
pub mod stats;
pub mod supernet;
pub mod train;

pub use error::{Error, Result};
