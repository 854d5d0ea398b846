//! Parameterised layers with PyTorch's initialisation, and the named parameter set.
//!
//! tch's own `nn` layers initialise differently from PyTorch (BatchNorm weight U(0,1), conv
//! bound √6/√fan_in); the reference implementations rely on PyTorch's defaults, so we build
//! layers here: conv/linear weights U(±1/√fan_in) (kaiming_uniform with a=√5), linear bias
//! U(±1/√fan_in), BatchNorm weight 1 and bias 0, eps 1e-5, momentum 0.1.

use tch::{Kind, Tensor};

use super::tap::TapLayer;

/// How BatchNorm normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics; running buffers updated (training).
    Train,
    /// Batch statistics; running buffers untouched (evaluation of criteria, search validation).
    BatchStats,
    /// Running statistics.
    Eval,
}

/// Trainable parameters and buffers in a fixed order, with their state-dict names.
#[derive(Debug, Default)]
pub struct ParamSet {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    pub buffer_names: Vec<String>,
    pub buffers: Vec<Tensor>,
    /// Set when a weight could not be allocated: (libtorch's message, bytes all the weights and
    /// buffers need). The set then holds empty placeholders and must not be used.
    pub alloc_failure: Option<(String, u64)>,
    /// Bytes of all weights and buffers.
    pub bytes: u64,
}

impl ParamSet {
    /// An allocation failure as an error naming the key (and settings) that size the network.
    pub fn check_allocated(&self, key: &str, settings: &str) -> crate::error::Result<()> {
        match &self.alloc_failure {
            None => Ok(()),
            Some((msg, bytes)) => Err(crate::error::Error::config(
                "config",
                key,
                format!(
                    "{settings}: the weights alone need {:.1} GiB, which cannot be allocated here ({})",
                    *bytes as f64 / (1u64 << 30) as f64,
                    msg.lines().next().unwrap_or("").trim()
                ),
            )),
        }
    }

    /// Number of trainable weights.
    pub fn count(&self) -> usize {
        self.tensors.iter().map(|t| t.numel()).sum()
    }

    /// (name, tensor) pairs of parameters then buffers, for state files.
    /// Move every weight and buffer to `device` in place (every handle to them follows).
    /// Weights are initialised on the host first, so one seed gives the same network anywhere.
    pub fn to_device(&self, device: tch::Device) {
        if device == tch::Device::Cpu {
            return;
        }
        let _g = tch::no_grad_guard();
        for t in self.tensors.iter().chain(&self.buffers) {
            let mut h = t.shallow_clone();
            h.set_data(&t.to_device(device));
        }
    }

    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.tensors)
            .chain(self.buffer_names.iter().zip(&self.buffers))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    }
}

/// Creates parameters in order under a name prefix.
pub struct Builder {
    kind: Kind,
    prefix: Vec<String>,
    pub set: ParamSet,
    /// Bytes of every tensor asked for so far.
    bytes: u64,
    /// The machine's memory (MemTotal), or no limit where unknown.
    available: u64,
}

thread_local! {
    static COUNT_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static MACS: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Run `f` counting the multiply-adds of every convolution and linear layer it runs on this
/// thread (as the NAS papers count FLOPs: BatchNorm, pooling and activations left out).
pub fn count_multiply_adds<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = MACS.with(|c| c.replace(Some(0.0)));
    let out = f();
    let macs = MACS.with(|c| c.replace(before)).unwrap_or(0.0);
    (out, macs)
}

/// Add `n` multiply-adds when counting.
fn add_macs(n: impl FnOnce() -> f64) {
    MACS.with(|c| {
        if let Some(m) = c.get() {
            c.set(Some(m + n()));
        }
    });
}

/// Run `f` with every [`Builder`] on this thread counting bytes without allocating (its tensors
/// are empty placeholders): the size of a network before it is built.
pub fn count_only<T>(f: impl FnOnce() -> T) -> T {
    let before = COUNT_ONLY.with(|c| c.replace(true));
    let out = f();
    COUNT_ONLY.with(|c| c.set(before));
    out
}

/// Refuse a network whose weights (`need` bytes, from [`count_only`]) cannot be trained on this
/// machine: training holds about three times them (weights, gradients, momentum). `key` and
/// `sizes` name the settings that size it.
pub fn check_fits(need: u64, key: &str, sizes: &str) -> crate::error::Result<()> {
    let available = available_memory();
    if need.saturating_mul(3) <= available {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(crate::error::Error::config(
        "config",
        key,
        format!(
            "{sizes}: the weights alone need {:.1} GiB, and training holds about three times that \
             (weights, gradients, momentum): more than the machine's {:.1} GiB of memory",
            gib(need),
            gib(available)
        ),
    ))
}

/// The machine's memory (MemTotal of /proc/meminfo) in bytes, u64::MAX where it cannot be read.
/// The total, not what is free now: every rank of a node reads the same figure and so takes the
/// same decision (a rank refusing alone would leave the others in a collective).
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

impl Builder {
    pub fn new(kind: Kind) -> Self {
        Builder { kind, prefix: Vec::new(), set: ParamSet::default(), bytes: 0, available: available_memory() }
    }

    /// Run `f` with `name` pushed onto the prefix.
    pub fn scope<T>(&mut self, name: impl Into<String>, f: impl FnOnce(&mut Self) -> T) -> T {
        self.prefix.push(name.into());
        let out = f(self);
        self.prefix.pop();
        out
    }

    fn full(&self, name: &str) -> String {
        let mut parts = self.prefix.clone();
        parts.push(name.to_string());
        parts.join(".")
    }

    /// A tensor of `shape` filled by `fill`, allocated fallibly: after a failure (or once one
    /// happened) an empty placeholder is returned and the bytes the tensor would need are
    /// counted, so that the caller can say how much the whole network needs.
    fn alloc(&mut self, shape: &[i64], fill: impl FnOnce(&Tensor) -> Result<(), tch::TchError>) -> Tensor {
        let bytes = shape.iter().product::<i64>().max(0) as u64 * self.kind.elt_size_in_bytes() as u64;
        self.bytes += bytes;
        if COUNT_ONLY.with(|c| c.get()) {
            return Tensor::empty([0], (self.kind, tch::Device::Cpu));
        }
        if self.set.alloc_failure.is_none() && self.bytes > self.available {
            // Past the machine's available memory the kernel may grant the pages and kill the
            // process later: stop here with a message instead.
            let gib = self.available as f64 / (1u64 << 30) as f64;
            self.set.alloc_failure = Some((format!("more than the machine's {gib:.1} GiB of memory"), 0));
        }
        if self.set.alloc_failure.is_none() {
            let _g = tch::no_grad_guard();
            match Tensor::f_empty(shape, (self.kind, tch::Device::Cpu)).and_then(|t| fill(&t).map(|_| t)) {
                Ok(t) => return t,
                Err(e) => self.set.alloc_failure = Some((e.to_string(), 0)),
            }
        }
        Tensor::empty([0], (self.kind, tch::Device::Cpu))
    }

    /// The parameter set, with the total bytes needed recorded in a failure.
    pub fn finish(mut self) -> ParamSet {
        if let Some((_, b)) = &mut self.set.alloc_failure {
            *b = self.bytes;
        }
        self.set.bytes = self.bytes;
        self.set
    }

    fn param(&mut self, name: &str, t: Tensor) -> Tensor {
        let t = t.set_requires_grad(true);
        self.set.names.push(self.full(name));
        self.set.tensors.push(t.shallow_clone());
        t
    }

    fn buffer(&mut self, name: &str, t: Tensor) -> Tensor {
        self.set.buffer_names.push(self.full(name));
        self.set.buffers.push(t.shallow_clone());
        t
    }

    fn uniform(&mut self, shape: &[i64], bound: f64) -> Tensor {
        self.alloc(shape, |t| t.shallow_clone().f_uniform_(-bound, bound).map(|_| ()))
    }

    fn filled(&mut self, shape: &[i64], value: f64) -> Tensor {
        self.alloc(shape, |t| t.shallow_clone().f_fill_(value).map(|_| ()))
    }

    /// Conv2d without bias (every conv in the search spaces is bias-free).
    pub fn conv(
        &mut self,
        name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        pad: i64,
        dil: i64,
        groups: i64,
    ) -> Conv {
        let fan_in = (cin / groups) * k * k;
        let w = self.uniform(&[cout, cin / groups, k, k], 1.0 / (fan_in as f64).sqrt());
        Conv { w: self.param(&format!("{name}.weight"), w), stride, pad, dil, groups }
    }

    pub fn batch_norm(&mut self, name: &str, c: i64, affine: bool) -> BatchNorm {
        self.batch_norm_momentum(name, c, affine, 0.1)
    }

    /// BatchNorm with another running-statistics momentum (PyTorch's convention: the weight of
    /// the new batch).
    pub fn batch_norm_momentum(&mut self, name: &str, c: i64, affine: bool, momentum: f64) -> BatchNorm {
        let (w, b) = if affine {
            let w = self.filled(&[c], 1.0);
            let w = self.param(&format!("{name}.weight"), w);
            let b = self.filled(&[c], 0.0);
            let b = self.param(&format!("{name}.bias"), b);
            (Some(w), Some(b))
        } else {
            (None, None)
        };
        let rm = self.filled(&[c], 0.0);
        let rm = self.buffer(&format!("{name}.running_mean"), rm);
        let rv = self.filled(&[c], 1.0);
        let rv = self.buffer(&format!("{name}.running_var"), rv);
        BatchNorm { w, b, rm, rv, momentum, eps: 1e-5 }
    }

    pub fn linear(&mut self, name: &str, din: i64, dout: i64) -> Linear {
        let bound = 1.0 / (din as f64).sqrt();
        let w = self.uniform(&[dout, din], bound);
        let b = self.uniform(&[dout], bound);
        Linear { w: self.param(&format!("{name}.weight"), w), b: self.param(&format!("{name}.bias"), b) }
    }
}

#[derive(Debug)]
pub struct Conv {
    pub w: Tensor,
    stride: i64,
    pad: i64,
    dil: i64,
    groups: i64,
}

impl Conv {
    /// This convolution's geometry with kernel `w` (no bookkeeping): the tangents' linear maps.
    pub fn apply(&self, x: &Tensor, w: &Tensor) -> Tensor {
        x.conv2d(w, None::<&Tensor>, [self.stride], [self.pad], [self.dil], self.groups)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = super::precision::apply(x, &self.w, |x, w| self.apply(x, w));
        // Each output value: (input channels per group)·k·k multiply-adds.
        add_macs(|| y.numel() as f64 * (self.w.size()[1] * self.w.size()[2] * self.w.size()[3]) as f64);
        if super::tap::active() {
            let k = self.w.size()[3];
            let layer = TapLayer::Conv { k, stride: self.stride, pad: self.pad, dil: self.dil, groups: self.groups };
            super::tap::record(layer, &[&self.w], x, &y);
        }
        y
    }
}

#[derive(Debug)]
pub struct BatchNorm {
    w: Option<Tensor>,
    b: Option<Tensor>,
    rm: Tensor,
    rv: Tensor,
    momentum: f64,
    eps: f64,
}

impl BatchNorm {
    /// (γ, β) where the normalisation is affine.
    pub fn affine(&self) -> (Option<&Tensor>, Option<&Tensor>) {
        (self.w.as_ref(), self.b.as_ref())
    }

    /// (running mean, running variance).
    pub fn running(&self) -> (&Tensor, &Tensor) {
        (&self.rm, &self.rv)
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }

    pub fn forward(&self, x: &Tensor, mode: BnMode) -> Tensor {
        if let (Some(w), Some(b), true) = (&self.w, &self.b, super::tap::active()) {
            // Recorded as normalisation, then the affine map y = x̂·γ + β whose input x̂ the
            // curvature factors need (the same function; rounding may differ from the fused op).
            let xhat = self.normalise(x, None, None, mode);
            let mut shape = vec![1i64; x.dim()];
            shape[1] = -1;
            let y = &xhat * w.view(shape.as_slice()) + b.view(shape.as_slice());
            super::tap::record(TapLayer::BatchNorm, &[w, b], &xhat, &y);
            return y;
        }
        self.normalise(x, self.w.as_ref(), self.b.as_ref(), mode)
    }

    fn normalise(&self, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, mode: BnMode) -> Tensor {
        match mode {
            BnMode::Train => x.batch_norm(w, b, Some(&self.rm), Some(&self.rv), true, self.momentum, self.eps, false),
            BnMode::BatchStats => x.batch_norm(w, b, None::<&Tensor>, None, true, self.momentum, self.eps, false),
            BnMode::Eval => x.batch_norm(w, b, Some(&self.rm), Some(&self.rv), false, self.momentum, self.eps, false),
        }
    }
}

#[derive(Debug)]
pub struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    /// (W, b).
    pub fn weights(&self) -> (&Tensor, &Tensor) {
        (&self.w, &self.b)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        // The bias in the operands' kind (the same tensor outside a bf16 guard).
        let y = super::precision::apply(x, &self.w, |x, w| x.linear(w, Some(&self.b.to_kind(w.kind()))));
        add_macs(|| y.numel() as f64 * self.w.size()[1] as f64);
        super::tap::record(TapLayer::Linear, &[&self.w, &self.b], x, &y);
        y
    }
}

/// ReLU → Conv (bias-free) → BatchNorm, the order of every conv op in these spaces.
#[derive(Debug)]
pub struct ReluConvBn {
    conv: Conv,
    bn: BatchNorm,
}

impl ReluConvBn {
    /// Names follow PyTorch's `nn.Sequential(ReLU, Conv2d, BatchNorm2d)` under `op`:
    /// `<name>.op.1.weight`, `<name>.op.2.{weight,bias,running_mean,running_var}`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(b: &mut Builder, name: &str, cin: i64, cout: i64, k: i64, stride: i64, pad: i64, affine: bool) -> Self {
        b.scope(name, |b| {
            b.scope("op", |b| {
                let conv = b.conv("1", cin, cout, k, stride, pad, 1, 1);
                let bn = b.batch_norm("2", cout, affine);
                ReluConvBn { conv, bn }
            })
        })
    }

    pub fn forward(&self, x: &Tensor, bn: BnMode) -> Tensor {
        self.forward_relued(&x.relu(), bn)
    }

    /// (conv, BatchNorm).
    pub fn parts(&self) -> (&Conv, &BatchNorm) {
        (&self.conv, &self.bn)
    }

    /// The op on `relu(x)` computed by the caller (shared by the ops that read the same x).
    pub fn forward_relued(&self, relu_x: &Tensor, bn: BnMode) -> Tensor {
        self.bn.forward(&self.conv.forward(relu_x), bn)
    }
}

/// Average pooling over `k×k` windows, padding excluded from the divisor (PyTorch's
/// `AvgPool2d(k, stride, pad, count_include_pad=False)`), for NCHW input.
///
/// Computed as a depthwise convolution with a constant all-ones kernel, scaled by the reciprocal
/// window count of each output position. libtorch's NCHW `avg_pool2d` kernel is scalar: on the
/// NB201 supernet its forward and backward took about a third of a gradient on CPU, and its double
/// backward runs `avg_pool2d` again. The convolution form is vectorised (oneDNN) and, being linear
/// with a constant kernel, differentiates to convolutions of the same size.
pub fn avg_pool(x: &Tensor, k: i64, stride: i64, pad: i64) -> Tensor {
    let (c, h, w) = match x.size()[..] {
        [_, c, h, w] => (c, h, w),
        ref s => panic!("avg_pool expects NCHW input, got shape {s:?}"),
    };
    let opts = (x.kind(), x.device());
    let kernel = Tensor::ones([c, 1, k, k], opts);
    let sums = x.conv2d(&kernel, None::<Tensor>, [stride, stride], [pad, pad], [1, 1], c);
    // Window counts: the same pooling of an all-ones image (tiny: one channel).
    let counts = Tensor::ones([1, 1, h, w], opts).conv2d(
        &Tensor::ones([1, 1, k, k], opts),
        None::<Tensor>,
        [stride, stride],
        [pad, pad],
        [1, 1],
        1,
    );
    sums * counts.reciprocal()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution form equals libtorch's `avg_pool2d(count_include_pad=false)` in value and
    /// in gradient, for odd and even sizes, stride 1 and 2 (f64: agreement to rounding).
    #[test]
    fn avg_pool_matches_libtorch() {
        tch::manual_seed(7);
        for &(h, w, k, stride, pad) in &[(8, 8, 3, 1, 1), (7, 9, 3, 2, 1), (6, 6, 2, 2, 0), (5, 5, 3, 1, 1)] {
            let x = Tensor::randn([2, 3, h, w], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
            let ours = avg_pool(&x, k, stride, pad);
            let theirs = x.avg_pool2d([k, k], [stride, stride], [pad, pad], false, false, None::<i64>);
            assert_eq!(ours.size(), theirs.size());
            let err = (&ours - &theirs).abs().max().double_value(&[]);
            assert!(err < 1e-14, "value {h}x{w} k{k} s{stride}: {err}");
            let g = Tensor::randn(ours.size(), (Kind::Double, tch::Device::Cpu));
            let ga = Tensor::run_backward(&[(&ours * &g).sum(Kind::Double)], &[&x], false, false).remove(0);
            let gb = Tensor::run_backward(&[(&theirs * &g).sum(Kind::Double)], &[&x], false, false).remove(0);
            let err = (&ga - &gb).abs().max().double_value(&[]);
            assert!(err < 1e-14, "gradient {h}x{w} k{k} s{stride}: {err}");
        }
    }
}
