//! The layers and ops that networks are built of, below both the search supernets
//! ([`crate::supernet`]) and the evaluation networks ([`crate::network`]): parameterised layers
//! with PyTorch's initialisation and the named parameter set ([`layers`]), the layer recorder
//! of K-FAC ([`tap`]), bf16 first-order steps ([`precision`]), forward-mode tangents of the layers ([`dual`]), the DARTS space's ops, preprocessing and channel plan ([`darts`]) and
//! NB201's residual block ([`nb201`]).

pub(crate) mod darts;
pub mod dual;
pub mod layers;
pub(crate) mod nb201;
pub mod precision;
pub mod tap;

pub use layers::{BnMode, ParamSet};
