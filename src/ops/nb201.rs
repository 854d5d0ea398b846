//! NAS-Bench-201's fixed blocks, shared by the search supernet and the evaluation network.

use tch::Tensor;

use super::dual::{Dual, Seeds};
use super::layers::{avg_pool, BnMode, Builder, Conv, ReluConvBn};

/// ResNet basic block with stride 2 (not searched, affine BN).
pub(crate) struct ResBlock {
    conv_a: ReluConvBn,
    conv_b: ReluConvBn,
    shortcut: Conv,
}

impl ResBlock {
    pub(crate) fn new(b: &mut Builder, cin: i64, cout: i64) -> Self {
        let conv_a = ReluConvBn::new(b, "conv_a", cin, cout, 3, 2, 1, true);
        let conv_b = ReluConvBn::new(b, "conv_b", cout, cout, 3, 1, 1, true);
        let shortcut = b.scope("downsample", |b| b.conv("1", cin, cout, 1, 1, 0, 1, 1));
        ResBlock { conv_a, conv_b, shortcut }
    }

    pub(crate) fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        let y = self.conv_b.forward(&self.conv_a.forward(x, bn), bn);
        let s = self.shortcut.forward(&avg_pool(x, 2, 2, 0));
        y + s
    }

    /// [`ResBlock::forward`] with tangents.
    pub(crate) fn dual(&self, x: &Dual, bn: BnMode, seeds: &Seeds) -> Dual {
        let y = self.conv_b.dual(&self.conv_a.dual(x, bn, seeds), bn, seeds);
        y.plus(self.shortcut.dual(&x.avg_pool(2, 2, 0), seeds))
    }
}
