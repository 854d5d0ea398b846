//! Reading a config (a file or the embedded demo, then `--set` overrides) and checking every
//! value before anything is written; errors name the file or `--set` and the dotted key.

use std::path::Path;

use super::*;
use crate::error::{Error, Result};

/// A range error of the final config is the file's when the file alone has it; otherwise the
/// first `--set` after which it appears is named (not the file it did not come from).
fn blame_override(path: Option<&Path>, text: &str, overrides: &[String], e: Error) -> Error {
    let Error::Config { key, .. } = &e else { return e };
    let fails_at = |n: usize| {
        Config::with_overrides(path, text, &overrides[..n])
            .is_some_and(|c| matches!(c.validate("-"), Err(Error::Config { key: k, .. }) if &k == key))
    };
    if overrides.is_empty() || fails_at(0) {
        return e;
    }
    match (1..=overrides.len()).find(|&n| fails_at(n)) {
        Some(n) => match e {
            Error::Config { key, msg, .. } => Error::config(format!("--set {}", overrides[n - 1]), key, msg),
            other => other,
        },
        None => e,
    }
}

/// Configs stored by earlier versions wrote 0 for "all" training and "none" test images.
fn legacy_counts(table: &mut toml::Table) {
    if let Some(toml::Value::Table(d)) = table.get_mut("data") {
        for (key, was) in [("train_size", "all"), ("test_size", "none")] {
            if d.get(key).and_then(toml::Value::as_integer) == Some(0) {
                d.insert(key.into(), toml::Value::String(was.into()));
            }
        }
    }
}

/// The embedded demo's `[data]` sizes (4,096 images of 16×16, …) belong to its synthetic task:
/// with `--set data.dataset=…` naming another dataset they are dropped, so that dataset's own
/// defaults apply (all its images at their own size), except the keys the user `--set` too.
fn scope_demo_data(table: &mut toml::Table, overrides: &[String]) {
    let Some(toml::Value::Table(data)) = table.get_mut("data") else { return };
    if data.get("dataset").and_then(|v| v.as_str()).is_none_or(|d| d == "synthetic") {
        return;
    }
    let demo: toml::Table = DEMO_TOML.parse().expect("the embedded demo config parses");
    let Some(toml::Value::Table(demo_data)) = demo.get("data") else { return };
    let set_by_user = |key: &str| {
        overrides.iter().any(|ov| ov.split_once('=').is_some_and(|(k, _)| k.trim() == format!("data.{key}")))
    };
    for key in demo_data.keys().filter(|k| *k != "dataset") {
        if !set_by_user(key) {
            data.remove(key);
        }
    }
}

impl Config {
    /// Load a config: `path` (or the embedded demo when `None`), then the `--set` overrides,
    /// then validation. Errors name the file or `--set` and the dotted key.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Path {
                    path: p.to_path_buf(),
                    msg: format!("cannot read config: {}", io_msg(&e)),
                })?;
                (p.display().to_string(), text)
            }
            None => ("<embedded demo config>".to_string(), DEMO_TOML.to_string()),
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| 1 + text[..s.start].matches('\n').count());
            // One line: toml's message may span several (e.g. a table defined twice).
            let msg = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ");
            match line {
                Some(l) => Error::config(&source, format!("line {l}"), format!("TOML syntax: {msg}")),
                None => Error::config(&source, "-", format!("TOML syntax: {msg}")),
            }
        })?;
        // A run directory's own config.toml (it carries `[run]`) may be from an earlier version.
        if table.contains_key("run") {
            legacy_counts(&mut table);
        }
        // File alone first, so a mistake in the file is reported against the file.
        Self::from_table(&table, &source)?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
            Self::from_table(&table, &format!("--set {ov}"))?;
        }
        if path.is_none() {
            scope_demo_data(&mut table, overrides);
        }
        let cfg = Self::from_table(&table, &source)?;
        if let Err(e) = cfg.validate(&source) {
            return Err(blame_override(path, &text, overrides, e));
        }
        Ok(cfg)
    }

    /// The config of `text` with the first `n` overrides (the demo's data scoping included).
    fn with_overrides(path: Option<&Path>, text: &str, overrides: &[String]) -> Option<Config> {
        let mut table: toml::Table = text.parse().ok()?;
        for ov in overrides {
            apply_override(&mut table, ov).ok()?;
        }
        if path.is_none() {
            scope_demo_data(&mut table, overrides);
        }
        Self::from_table(&table, "").ok()
    }

    /// Parse and validate a config from TOML text (a checkpoint's stored config).
    pub fn from_toml_str(text: &str) -> Result<Config> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::config("stored config", "-", e.message().trim().to_string()))?;
        legacy_counts(&mut table);
        let cfg = Self::from_table(&table, "stored config")?;
        cfg.validate("stored config")?;
        Ok(cfg)
    }

    fn from_table(table: &toml::Table, source: &str) -> Result<Config> {
        let value = toml::Value::Table(table.clone());
        let mut cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let msg = inner.lines().next().unwrap_or("").trim().to_string();
            let (key, msg) = unknown_field_key(&key, &msg);
            Error::config(source, key, msg)
        })?;
        cfg.data.resolve_synthetic();
        if cfg.space.layers == 0 {
            cfg.space.layers = if cfg.space.name.contains("nb1shot1") { 9 } else { 8 };
        }
        Ok(cfg)
    }

    /// Range checks that serde cannot express. World-size checks live in [`Config::check_world`].
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(source, key, msg));
        if crate::space::SpaceSpec::by_name(&self.space.name).is_none() {
            let known: Vec<String> = crate::space::SpaceSpec::NAMES.iter().map(|n| format!("{n:?}")).collect();
            return bad(
                "space.name",
                format!("unknown search space {:?} (known: {})", self.space.name, known.join(", ")),
            );
        }
        if self.space.name != "nb201" && !(3..=64).contains(&self.space.layers) {
            return bad("space.layers", format!("must be in 3..=64 (got {})", self.space.layers));
        }
        if self.space.name == "pc-darts" && self.select.criterion == Criterion::DartsPt {
            return bad(
                "select.criterion",
                "darts-pt is not defined for PC-DARTS (its projection would leave the bypassed channels' edge weight)"
                    .into(),
            );
        }
        if self.space.partial != 0 && self.space.name != "pc-darts" {
            return bad("space.partial", format!("applies to space.name = \"pc-darts\" (got {:?})", self.space.name));
        }
        let k = self.space.partial_k();
        if !(1..=64).contains(&k) {
            return bad("space.partial", format!("must be in 0..=64 (got {k})"));
        }
        if self.space.channels % k as usize != 0 {
            return bad(
                "space.channels",
                format!(
                    "PC-DARTS splits channels in {k} groups: must be a multiple of {k} (got {})",
                    self.space.channels
                ),
            );
        }
        if self.space.channels == 0 || self.space.channels > 4096 {
            return bad("space.channels", format!("must be in 1..=4096 (got {})", self.space.channels));
        }
        if self.space.cells_per_stage > 64 {
            return bad("space.cells_per_stage", format!("must be in 0..=64 (got {})", self.space.cells_per_stage));
        }
        self.data.validate(source)?;
        if self.space.stem != StemKind::Cifar && !self.space.name.contains("darts") {
            return bad("space.stem", format!("applies to the DARTS family only (space.name = {:?})", self.space.name));
        }
        self.space.stem.check_image_size(source, "space.stem", self.data.side())?;
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1 (disable with checkpoint.enabled = false)".into());
        }
        if self.search.epochs == 0 {
            return bad("search.epochs", "must be at least 1 (got 0)".into());
        }
        if self.search.batch_size == 0 {
            return bad("search.batch_size", "must be at least 1 (got 0)".into());
        }
        let half = self.data.train_size.of(0) / 2;
        // Real datasets: checked against the split when the data is opened.
        if self.data.dataset == DatasetKind::Synthetic && self.search.batch_size > half {
            return bad(
                "search.batch_size",
                format!(
                    "{} is larger than each half of the search split (data.train_size / 2 = {half})",
                    self.search.batch_size
                ),
            );
        }
        if self.search.micro_batch > self.search.batch_size {
            return bad(
                "search.micro_batch",
                format!("{} exceeds search.batch_size {}", self.search.micro_batch, self.search.batch_size),
            );
        }
        let w = &self.search.weights;
        positive(source, "search.weights.lr", w.lr)?;
        if !(w.lr_min >= 0.0 && w.lr_min <= w.lr) {
            return bad("search.weights.lr_min", format!("must be in [0, search.weights.lr] (got {})", w.lr_min));
        }
        unit_interval(source, "search.weights.momentum", w.momentum)?;
        w.check_schedule(source, "search.weights", self.search.epochs)?;
        non_negative(source, "search.weights.weight_decay", w.weight_decay)?;
        non_negative(source, "search.weights.grad_clip", w.grad_clip)?;
        if w.nesterov && w.momentum == 0.0 {
            return bad("search.weights.nesterov", "needs search.weights.momentum > 0".into());
        }
        self.validate_strategy(source)?;
        let a = &self.search.arch;
        positive(source, "search.arch.lr", a.lr)?;
        unit_interval(source, "search.arch.beta1", a.beta1)?;
        unit_interval(source, "search.arch.beta2", a.beta2)?;
        non_negative(source, "search.arch.weight_decay", a.weight_decay)?;
        non_negative(source, "search.arch.init_std", a.init_std)?;
        if self.output.log_every == 0 {
            return bad("output.log_every", "must be at least 1 (got 0)".into());
        }
        self.select.validate(source)
    }

    /// The search strategies' own settings and the spaces they are defined on.
    fn validate_strategy(&self, source: &str) -> Result<()> {
        use crate::config::Strategy;
        let bad = |key: &str, msg: String| Err(Error::config(source, key, msg));
        let st = self.search.strategy;
        if st.has_temperature() {
            positive(source, "search.tau_min", self.search.tau_min)?;
            if !(self.search.tau_max >= self.search.tau_min && self.search.tau_max.is_finite()) {
                return bad(
                    "search.tau_max",
                    format!(
                        "must be finite and at least search.tau_min {} (got {})",
                        self.search.tau_min, self.search.tau_max
                    ),
                );
            }
        }
        if st.picks_candidates() && !(1..=100_000).contains(&self.search.candidates) {
            return bad("search.candidates", format!("must be in 1..=100000 (got {})", self.search.candidates));
        }
        if st == Strategy::Enas {
            let e = &self.search.enas;
            let at_least_one = |key: &str, v: usize| -> Result<()> {
                if v == 0 {
                    return bad(key, "must be at least 1 (got 0)".into());
                }
                Ok(())
            };
            at_least_one("search.enas.controller_steps", e.controller_steps)?;
            at_least_one("search.enas.aggregate", e.aggregate)?;
            if !(1..=4096).contains(&e.hidden) {
                return bad("search.enas.hidden", format!("must be in 1..=4096 (got {})", e.hidden));
            }
            positive(source, "search.enas.lr", e.lr)?;
            positive(source, "search.enas.eps", e.eps)?;
            positive(source, "search.enas.temperature", e.temperature)?;
            positive(source, "search.enas.tanh_constant", e.tanh_constant)?;
            unit_interval(source, "search.enas.beta1", e.beta1)?;
            unit_interval(source, "search.enas.beta2", e.beta2)?;
            unit_interval(source, "search.enas.baseline_decay", e.baseline_decay)?;
            non_negative(source, "search.enas.entropy_weight", e.entropy_weight)?;
            non_negative(source, "search.enas.grad_clip", e.grad_clip)?;
        }
        let space = self.space.name.as_str();
        let on = match st {
            Strategy::Darts1st | Strategy::Darts2nd | Strategy::Darts2ndExact => true,
            // One op per edge through the space's own tables: NB201 and DARTS (not PC-DARTS's
            // partial channels, not 1Shot1's input weights).
            Strategy::Gdas | Strategy::Snas | Strategy::Setn | Strategy::RandomNas | Strategy::Random => {
                matches!(space, "nb201" | "darts" | "darts-s5")
            }
            // ENAS's controller emits NB201's six ops.
            Strategy::Enas => space == "nb201",
        };
        if !on {
            return bad("search.strategy", format!("{st} is not available on the {space:?} space"));
        }
        if st == Strategy::Random && self.select.after_search {
            return bad(
                "select.after_search",
                "the random baseline trains no supernet to select on: set select.after_search = false".into(),
            );
        }
        Ok(())
    }

    /// Images per evaluation batch of the selection.
    pub fn select_batch(&self) -> usize {
        if self.select.batch_size == 0 {
            self.search.batch_size
        } else {
            self.select.batch_size
        }
    }

    /// Checks that depend on the number of ranks.
    /// `[fault]` must name a rank of this job (else the fault would silently never fire).
    pub fn check_fault(&self, world: usize) -> Result<()> {
        if self.fault.action != FaultAction::None && self.fault.rank >= world {
            let msg = format!("{} is not a rank of this {world}-rank job (0..={})", self.fault.rank, world - 1);
            return Err(Error::config("world size", "fault.rank", msg));
        }
        Ok(())
    }

    pub fn check_world(&self, world: usize) -> Result<()> {
        self.check_fault(world)?;
        let src = "world size";
        let b = self.search.batch_size;
        if world > b {
            return Err(Error::config(
                src,
                "search.batch_size",
                format!("{world} ranks exceed the global batch of {b}"),
            ));
        }
        if b % world != 0 {
            return Err(Error::config(src, "search.batch_size", format!("{b} is not divisible by the {world} ranks")));
        }
        let shard = b / world;
        let m = self.micro_batch(world);
        if shard % m != 0 {
            return Err(Error::config(
                src,
                "search.micro_batch",
                format!("{m} does not divide the per-rank shard of {shard} (search.batch_size {b} / {world} ranks)"),
            ));
        }
        Ok(())
    }

    /// Micro-batch size on `world` ranks.
    pub fn micro_batch(&self, world: usize) -> usize {
        if self.search.micro_batch == 0 {
            self.search.batch_size / world.max(1)
        } else {
            self.search.micro_batch
        }
    }

    /// Steps per epoch: `steps_per_epoch`, or one drop-last pass over the `n_weights` images
    /// of the θ split.
    pub fn steps_per_epoch(&self, n_weights: usize) -> usize {
        if self.search.steps_per_epoch > 0 {
            self.search.steps_per_epoch
        } else {
            (n_weights / self.search.batch_size).max(1)
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

impl DataConfig {
    /// The synthetic dataset's defaults for the keys that real datasets take from the files.
    fn resolve_synthetic(&mut self) {
        if self.dataset == DatasetKind::Synthetic {
            for (v, d) in [(&mut self.num_classes, 10), (&mut self.image_size, 32)] {
                if *v == 0 {
                    *v = d;
                }
            }
            // Counts of the generated images: "all" is 50,000 training and 10,000 test images.
            if self.train_size == Count::All {
                self.train_size = Count::N(50_000);
            }
            if self.test_size == Count::All {
                self.test_size = Count::N(10_000);
            }
        }
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(source, format!("data.{key}"), msg));
        if self.train_size == Count::None {
            return bad("train_size", "must be a number or \"all\" (got \"none\")".into());
        }
        let synthetic = self.dataset == DatasetKind::Synthetic;
        if synthetic {
            if self.num_classes < 2 {
                return bad("num_classes", format!("must be at least 2 (got {})", self.num_classes));
            }
            if !(4..=1024).contains(&self.image_size) || self.image_size % 4 != 0 {
                return bad("image_size", format!("must be a multiple of 4 in 4..=1024 (got {})", self.image_size));
            }
            if self.train_size.of(0) < 2 {
                return bad("train_size", format!("must be at least 2 (got {})", self.train_size));
            }
            if self.split != SplitKind::Halves {
                return bad("split", "the synthetic dataset uses \"halves\"".into());
            }
        } else if self.root.is_none() {
            return bad("root", format!("required for dataset {:?} (the directory of its files)", self.dataset));
        }
        if self.dataset == DatasetKind::ImageNet && self.image_size != 0 && !(16..=1024).contains(&self.image_size) {
            return bad("image_size", format!("must be in 16..=1024 for ImageNet crops (got {})", self.image_size));
        }
        if self.split == SplitKind::File && self.split_file.is_none() {
            return bad("split_file", "required with data.split = \"file\"".into());
        }
        if !(self.subset_fraction > 0.0 && self.subset_fraction <= 1.0) {
            return bad("subset_fraction", format!("must be in (0, 1] (got {})", self.subset_fraction));
        }
        for (key, f) in [("weights_fraction", self.weights_fraction), ("arch_fraction", self.arch_fraction)] {
            if !(f > 0.0 && f <= 1.0) {
                return bad(key, format!("must be in (0, 1] (got {f})"));
            }
        }
        if self.weights_fraction + self.arch_fraction > 1.0 {
            return bad(
                "arch_fraction",
                format!("with data.weights_fraction it exceeds 1 (got {})", self.arch_fraction),
            );
        }
        // torchvision's limits: factors ≥ 0, a hue shift of at most half a turn.
        if let Some(x) = self.color_jitter.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
            return bad("color_jitter", format!("every entry must be finite and ≥ 0 (got {x})"));
        }
        if self.color_jitter[3] > 0.5 {
            return bad("color_jitter", format!("the hue entry must be at most 0.5 (got {})", self.color_jitter[3]));
        }
        if self.dataset != DatasetKind::ImageNet {
            let set = [
                ("subset_classes", self.subset_classes > 0),
                ("subset_fraction", self.subset_fraction < 1.0),
                ("skip_bad_images", self.skip_bad_images),
                ("color_jitter", self.color_jitter != [0.0; 4]),
                ("split", self.split == SplitKind::PerClass),
            ];
            if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
                return bad(key, format!("applies to dataset = \"imagenet\" only (got {:?})", self.dataset));
            }
        }
        // Each prefetched batch is a whole decoded batch in memory; a few hide decoding.
        if self.prefetch > 64 {
            return bad("prefetch", format!("must be at most 64 batches (got {})", self.prefetch));
        }
        if !(self.noise >= 0.0 && self.noise.is_finite()) {
            return bad("noise", format!("must be finite and ≥ 0 (got {})", self.noise));
        }
        Ok(())
    }
}

impl SelectConfig {
    pub fn validate(&self, source: &str) -> Result<()> {
        if self.pt_interval == 0 {
            return Err(Error::config(source, "select.pt_interval", "must be at least 1 (got 0)"));
        }
        non_negative(source, "select.pt_lr", self.pt_lr)?;
        if self.track_every > 0 && self.criterion == Criterion::DartsPt {
            return Err(Error::config(
                source,
                "select.track_every",
                "tracking scores a criterion as it stands; darts-pt trains",
            ));
        }
        if !self.track_n.is_empty() {
            if self.criterion != Criterion::DartsIm || self.faithful || self.fisher_samples != FisherSamples::Batch {
                return Err(Error::config(
                    source,
                    "select.track_n",
                    "tracks DARTS-IM for several N at once: needs select.criterion = \"darts-im\" (not faithful, batch Fisher samples)",
                ));
            }
            if let Some(n) = self.track_n.iter().find(|&&n| n == 0) {
                return Err(Error::config(source, "select.track_n", format!("every N must be at least 1 (got {n})")));
            }
        }
        if self.n == 0 {
            return Err(Error::config(source, "select.n", "must be at least 1 (got 0)"));
        }
        if self.k == 0 {
            return Err(Error::config(source, "select.k", "must be at least 1 (got 0)"));
        }
        positive(source, "select.gamma", self.gamma)?;
        positive(source, "select.eta", self.eta)?;
        positive(source, "select.fisher_scale", self.fisher_scale)?;
        non_negative(source, "select.damping", self.damping)?;
        positive(source, "select.cg_tol", self.cg_tol)?;
        if self.cg_max_iter == 0 {
            return Err(Error::config(source, "select.cg_max_iter", "must be at least 1 (got 0)"));
        }
        if self.micro_batch > 0 && self.bn != BnStats::Running {
            return Err(Error::config(
                source,
                "select.micro_batch",
                "splitting a batch changes its BatchNorm statistics: needs select.bn = \"running\"",
            ));
        }
        if self.recompute == Recompute::Cells && self.products != Products::ReverseOverForward {
            return Err(Error::config(
                source,
                "select.recompute",
                "\"cells\" recomputes the tangent forward: needs select.products = \"reverse-over-forward\"",
            ));
        }
        if self.fisher_samples == FisherSamples::Sample && self.bn != BnStats::Running {
            return Err(Error::config(
                source,
                "select.fisher_samples",
                "\"sample\" needs select.bn = \"running\" (batch statistics of one image are undefined)",
            ));
        }
        if matches!(self.ihvp, Ihvp::Kfac | Ihvp::Ekfac)
            && self.damping_rule == DampingRule::Fixed
            && self.damping == 0.0
        {
            return Err(Error::config(
                source,
                "select.damping",
                format!(
                    "{} needs a damping λ > 0 (its factors are singular off the samples' span): set select.damping, \
                     or select.damping_rule = \"mean-eigenvalue\" (λ = select.damping_fraction × the mean eigenvalue)",
                    self.ihvp
                ),
            ));
        }
        if self.faithful && self.criterion != Criterion::DartsIm {
            return Err(Error::config(source, "select.faithful", "the authors' computation exists for darts-im only"));
        }
        Ok(())
    }
}

fn positive(source: &str, key: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be finite and > 0 (got {v})")))
    }
}

fn non_negative(source: &str, key: &str, v: f64) -> Result<()> {
    if v >= 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be finite and ≥ 0 (got {v})")))
    }
}

fn unit_interval(source: &str, key: &str, v: f64) -> Result<()> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(source, key, format!("must be in [0, 1) (got {v})")))
    }
}

fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The error path already ends in the offending key; shorten serde's unknown-field message.
fn unknown_field_key(path: &str, msg: &str) -> (String, String) {
    let key = if path.is_empty() || path == "." { "-".to_string() } else { path.to_string() };
    match msg.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
        Some((_, expected)) => (key, format!("unknown key ({})", expected.trim_start_matches(',').trim())),
        None => (key, msg.to_string()),
    }
}

/// Apply `a.b.c=value`: the value is parsed as TOML (`0.1`, `true`, `"x"`, `[1, 2]`), and taken
/// as a plain string when it does not parse.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) =
        ov.split_once('=').ok_or_else(|| Error::config(format!("--set {ov}"), ov, "expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(Error::config(format!("--set {ov}"), key, "malformed key"));
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").expect("parsed key"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(Error::config(format!("--set {ov}"), parts[..=i].join("."), "is a value, not a section")),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

impl TrainConfig {
    /// Checks of the training keys that serde cannot express (`source` names the config).
    pub fn validate(&self, source: &str) -> Result<()> {
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::config(
                source,
                "train.label_smoothing",
                format!("must be in [0, 1) (got {})", self.label_smoothing),
            ));
        }
        self.weights.check_schedule(source, "train.weights", self.epochs)
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
