//! Evaluation of the supernet (or of one path through it) over a set of images, data-parallel.

use tch::Tensor;

use super::sampling::{self, Mix};
use super::{SearchState, Searcher};
use crate::config::Strategy;
use crate::data::make_batch;
use crate::error::Result;
use crate::loss::{cross_entropy, Tally};
use crate::supernet::{BnMode, Path, Supernet};

impl Searcher<'_> {
    /// The forward's mixing of the epoch-end validation and of the held-out test: softmax(α)
    /// for DARTS and SNAS; for GDAS and SETN the single path of the argmax genotype (what
    /// they derive); for random-nas a uniformly drawn path of the epoch.
    pub fn eval_mix(&self, state: &SearchState, epoch: usize) -> Mix {
        let spec = state.net.spec();
        match self.cfg.search.strategy {
            Strategy::Gdas | Strategy::Setn => Mix::Single(sampling::genotype_path(spec, &state.magnitude_genotype())),
            Strategy::Enas => match &state.controller {
                Some(c) => Mix::Single(vec![c.greedy().into_iter().map(Some).collect()]),
                None => Mix::Soft,
            },
            Strategy::RandomNas | Strategy::Random => Mix::Single(sampling::uniform_path(
                spec,
                &mut crate::rng::SplitMix64::keyed(&[self.cfg.seed, sampling::EVAL_PATH, epoch as u64]),
            )),
            _ => Mix::Soft,
        }
    }

    /// Loss and accuracy over `indices` with batch statistics per micro-batch. Micro-batches
    /// are dealt to ranks round-robin, so the result does not depend on the number of ranks
    /// (when `search.micro_batch` is set).
    pub fn evaluate(&self, state: &SearchState, indices: &[usize]) -> Result<Tally> {
        self.evaluate_mix(state, &Mix::Soft, indices)
    }

    /// [`Self::evaluate`] with the forward's mixing `mix`.
    pub fn evaluate_mix(&self, state: &SearchState, mix: &Mix, indices: &[usize]) -> Result<Tally> {
        let _g = tch::no_grad_guard();
        let alphas: Vec<Tensor> = state.alphas.iter().map(|a| a.detach()).collect();
        let (w, path) = mix.weights(state.net.as_ref(), &state.projection, &alphas);
        self.evaluate_with(state.net.as_ref(), &w, path.as_ref(), indices)
    }

    /// Loss and accuracy over `indices` with the given forward weights (batch statistics per
    /// micro-batch, micro-batches dealt to ranks round-robin).
    pub fn evaluate_with(
        &self,
        net: &dyn Supernet,
        w: &[Tensor],
        path: Option<&Path>,
        indices: &[usize],
    ) -> Result<Tally> {
        let _g = tch::no_grad_guard();
        let (rank, world) = (self.comm.rank(), self.comm.size());
        let m = self.cfg.micro_batch(world);
        let mut tally = Tally::default();
        for chunk in indices.chunks(m).skip(rank).step_by(world) {
            let (x, y) = make_batch(self.data, chunk, None, self.comm.device())
                .map_err(|e| crate::comm::fail_alone(self.comm, e))?;
            let x = x.to_kind(w[0].kind());
            let logits = net.forward_on(&x, w, path, BnMode::BatchStats);
            let loss = cross_entropy(&logits, &y).double_value(&[]);
            tally.add(&logits, &y, loss);
        }
        let mut t = tally.as_array();
        self.comm.all_reduce_sum_f64(&mut t)?;
        Ok(Tally::from_array(t))
    }
}
