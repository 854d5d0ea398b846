//! Collective communication between ranks.
//!
//! [`Collective`] is the one seam every distributed computation goes through. Implementations:
//! [`LocalCollective`] (one process), [`MpiCollective`](mpi::MpiCollective) (rsmpi, feature
//! `mpi`). NCCL slots in as another implementation for CUDA tensors.
//!
//! Rules every implementation keeps: all ranks call collectives in the same order; reductions
//! of the same inputs give bit-identical results on every rank (so replicated state stays in
//! sync); tensors are reduced through one flat buffer, not one call per parameter.

pub mod device_link;
mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "cuda")]
pub mod nccl;

pub use local::LocalCollective;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Collective operations over the ranks of one job.
///
/// Errors: the MPI backend runs under MPI's default handler (`MPI_ERRORS_ARE_FATAL`): a failed
/// MPI call ends the whole job there, so its methods return `Ok` or not at all. The `Result`s
/// are for NCCL (whose calls report failures) and for checks of the arguments (mixed kinds).
/// Flags are agreed with [`Collective::any`] (a maximum), never by summing them.
pub trait Collective {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Name of the backend, for reports.
    fn backend(&self) -> &'static str;
    /// This rank's compute device (one rank per GPU): data batches, the supernet or network,
    /// α and every influence quantity live on it.
    fn device(&self) -> tch::Device;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Elementwise maximum over ranks, in place.
    fn all_reduce_max_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Elementwise minimum over ranks, in place.
    fn all_reduce_min_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Replace `bytes` on every rank with `root`'s bytes.
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()>;
    /// Gather every rank's bytes on `root` (in rank order); other ranks get an empty list.
    fn gather_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Personalised exchange: `send[s]` goes to rank s; returns what each rank sent to this one
    /// (indexed by source rank).
    fn all_to_all_bytes(&self, send: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>>;
    /// Wait for all ranks.
    fn barrier(&self) -> Result<()>;
    /// Split into groups (collective): the ranks passing the same `color` form one group,
    /// ranked by `key`. Independent work units (ablation combinations, seeds, architectures)
    /// run in groups side by side.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>>;
    /// Stop every rank of the job with this status (a failure on one rank must not leave the
    /// others blocked in a collective).
    fn abort(&self, code: i32) -> !;

    /// Calls made on a device collective library (NCCL), or `None` for host-only backends.
    fn device_calls(&self) -> Option<usize> {
        None
    }
    /// Seconds this process has spent in reductions (f32/f64 buffers and tensors) so far.
    fn reduce_seconds(&self) -> f64 {
        0.0
    }

    /// The ranks of the whole job on this rank's node (they share its cores).
    fn ranks_on_node(&self) -> usize {
        1
    }

    /// True on the coordinator (rank 0).
    fn is_coordinator(&self) -> bool {
        self.rank() == 0
    }

    /// Whether `flag` holds on any rank (a maximum, not a sum of flags).
    fn any(&self, flag: bool) -> Result<bool> {
        if self.size() == 1 {
            return Ok(flag);
        }
        let mut v = [flag as u8 as f64];
        self.all_reduce_max_f64(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Element-wise mean over ranks, in place.
    fn all_reduce_mean_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum_f32(buf)?;
        let n = self.size() as f32;
        buf.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }

    /// Element-wise mean over ranks, in place.
    fn all_reduce_mean_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.all_reduce_sum_f64(buf)?;
        let n = self.size() as f64;
        buf.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }

    /// Sum CPU tensors over ranks, in place, through one flat buffer. f32 and f64 tensors are
    /// reduced in their own precision; all tensors must share one kind.
    fn all_reduce_sum_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        if self.size() == 1 || tensors.is_empty() {
            return Ok(());
        }
        let kind = tensors[0].kind();
        if tensors.iter().any(|t| t.kind() != kind) {
            return Err(Error::Comm("all_reduce_sum_tensors: tensors of mixed kinds".into()));
        }
        let _guard = tch::no_grad_guard();
        let flat = Tensor::cat(&tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)
            .to_device(tch::Device::Cpu)
            .contiguous();
        let n = flat.numel();
        let reduced = match kind {
            Kind::Float => {
                let mut v = vec![0f32; n];
                flat.copy_data(&mut v, n);
                self.all_reduce_sum_f32(&mut v)?;
                Tensor::from_slice(&v)
            }
            Kind::Double => {
                let mut v = vec![0f64; n];
                flat.copy_data(&mut v, n);
                self.all_reduce_sum_f64(&mut v)?;
                Tensor::from_slice(&v)
            }
            k => return Err(Error::Comm(format!("all_reduce_sum_tensors: unsupported kind {k:?}"))),
        };
        let mut off = 0i64;
        for t in tensors {
            let len = t.numel() as i64;
            let mut t = t.shallow_clone();
            t.copy_(&reduced.narrow(0, off, len).view_as(&t).to_device(t.device()));
            off += len;
        }
        Ok(())
    }

    /// Mean of CPU tensors over ranks, in place.
    fn all_reduce_mean_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        self.all_reduce_sum_tensors(tensors)?;
        if self.size() > 1 {
            let _guard = tch::no_grad_guard();
            let n = self.size() as f64;
            for t in tensors {
                let mut t = t.shallow_clone();
                let _ = t.divide_scalar_(n);
            }
        }
        Ok(())
    }

    /// Overwrite tensors on every rank with the root's values.
    fn broadcast_tensors(&self, root: usize, tensors: &[Tensor]) -> Result<()> {
        if self.size() == 1 || tensors.is_empty() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let mut bytes = Vec::new();
        if self.rank() == root {
            for t in tensors {
                let c = t.to_device(tch::Device::Cpu).contiguous();
                let n = c.numel() * c.kind().elt_size_in_bytes();
                let mut b = vec![0u8; n];
                c.copy_data_u8(&mut b, c.numel());
                bytes.extend_from_slice(&b);
            }
        }
        self.broadcast_bytes(root, &mut bytes)?;
        let mut off = 0usize;
        for t in tensors {
            let n = t.numel() * t.kind().elt_size_in_bytes();
            let src = bytes
                .get(off..off + n)
                .ok_or_else(|| Error::Comm("broadcast_tensors: shapes differ between ranks".into()))?;
            let v = Tensor::from_data_size(src, &t.size(), t.kind());
            let mut t = t.shallow_clone();
            t.copy_(&v.to_device(t.device()));
            off += n;
        }
        Ok(())
    }
}

/// Broadcast a serialisable value from `root`; `value` must be `Some` on the root.
/// An error that only this rank met (a batch it alone reads failed to decode) while the others
/// may already wait in a collective: with several ranks this rank prints it and ends the job
/// (`MPI_Abort`; the launcher stops the others), else it is returned as usual.
pub fn fail_alone(comm: &dyn Collective, e: Error) -> Error {
    if comm.size() > 1 {
        crate::error::print_line(&format!("error: {e} (on rank {} of {}; ending the job)", comm.rank(), comm.size()));
        comm.abort(e.exit_code());
    }
    e
}

pub fn broadcast_value<T: serde::Serialize + serde::de::DeserializeOwned>(
    comm: &(impl Collective + ?Sized),
    root: usize,
    value: Option<&T>,
) -> Result<T> {
    let mut bytes = match (comm.rank() == root, value) {
        (true, Some(v)) => postcard::to_stdvec(v).map_err(|e| Error::Comm(format!("encode: {e}")))?,
        (true, None) => return Err(Error::Comm("broadcast_value: the root has no value".into())),
        (false, _) => Vec::new(),
    };
    comm.broadcast_bytes(root, &mut bytes)?;
    postcard::from_bytes(&bytes).map_err(|e| Error::Comm(format!("decode: {e}")))
}

/// Exercise every collective with values whose results are known, and report the first
/// mismatch. `dartsif-dist check-comm` runs this; it is how a user checks an MPI installation.
pub fn self_check(comm: &dyn Collective) -> Result<()> {
    let (r, n) = (comm.rank(), comm.size());
    let fail = |what: &str, got: String, want: String| {
        Err(Error::Comm(format!("rank {r}: {what}: got {got}, expected {want}")))
    };
    // Σ_r (r + 1) = n(n+1)/2, exact in floating point for small n.
    let want = (n * (n + 1) / 2) as f64;
    let mut a = vec![(r + 1) as f32; 3];
    comm.all_reduce_sum_f32(&mut a)?;
    if a.iter().any(|&x| x as f64 != want) {
        return fail("all-reduce sum f32", format!("{a:?}"), format!("{want}"));
    }
    let mut b = vec![(r + 1) as f64, -((r + 1) as f64)];
    comm.all_reduce_mean_f64(&mut b)?;
    let mean = want / n as f64;
    if b != [mean, -mean] {
        return fail("all-reduce mean f64", format!("{b:?}"), format!("[{mean}, {}]", -mean));
    }
    let mut c = vec![(r + 1) as f32; 2];
    comm.all_reduce_mean_f32(&mut c)?;
    if c.iter().any(|&x| x as f64 != mean) {
        return fail("all-reduce mean f32", format!("{c:?}"), format!("{mean}"));
    }
    // Max and min of (r + 1, −(r + 1)): (n, −1) and (1, −n); `any` of "rank is the last".
    let mut mx = vec![(r + 1) as f64, -((r + 1) as f64)];
    comm.all_reduce_max_f64(&mut mx)?;
    let mut mn = vec![(r + 1) as f64, -((r + 1) as f64)];
    comm.all_reduce_min_f64(&mut mn)?;
    if mx != [n as f64, -1.0] || mn != [1.0, -(n as f64)] {
        return fail("all-reduce max/min f64", format!("{mx:?}, {mn:?}"), format!("[{n}, -1], [1, -{n}]"));
    }
    if !comm.any(r + 1 == n)? || comm.any(r > n)? {
        return fail("any", "a wrong flag".into(), format!("true for rank {} of {n}, false for none", n - 1));
    }
    // On the compute device: with NCCL this exercises the device path.
    let dev = comm.device();
    let m = [Tensor::full([2], (r + 1) as f64, (Kind::Float, dev))];
    comm.all_reduce_mean_tensors(&m)?;
    let m0 = m[0].sum(Kind::Double).double_value(&[]);
    if m0 != 2.0 * mean {
        return fail("all-reduce mean of tensors", format!("sum {m0}"), format!("{}", 2.0 * mean));
    }
    let t = [Tensor::full([2, 2], (r + 1) as f64, (Kind::Double, dev)), Tensor::full([3], 1.0, (Kind::Double, dev))];
    comm.all_reduce_sum_tensors(&t)?;
    let (t0, t1) = (t[0].sum(Kind::Double).double_value(&[]), t[1].sum(Kind::Double).double_value(&[]));
    if t0 != 4.0 * want || t1 != 3.0 * n as f64 {
        return fail("all-reduce tensors", format!("sums {t0}, {t1}"), format!("{}, {}", 4.0 * want, 3 * n));
    }
    // Broadcast of device tensors: rank r holds r + 1; everyone ends with the root's 1.
    let bt = [
        Tensor::full([3], (r + 1) as f64, (Kind::Float, dev)),
        Tensor::full([1], -((r + 1) as f64), (Kind::Float, dev)),
    ];
    comm.broadcast_tensors(0, &bt)?;
    let (b0, b1) = (bt[0].sum(Kind::Double).double_value(&[]), bt[1].double_value(&[0]));
    if (b0, b1) != (3.0, -1.0) {
        return fail("broadcast of tensors", format!("sum {b0}, {b1}"), "3, -1".into());
    }
    // Groups (ablations and seeds run in them): ranks of one parity, ordered by rank; the group
    // sums r + 1 over its ranks.
    let group = comm.split(r % 2, r)?;
    let gt = [Tensor::full([2], (r + 1) as f64, (Kind::Float, dev))];
    group.all_reduce_sum_tensors(&gt)?;
    let gwant: usize = (0..n).filter(|k| k % 2 == r % 2).map(|k| k + 1).sum();
    let g0 = gt[0].sum(Kind::Double).double_value(&[]);
    if g0 != 2.0 * gwant as f64 || group.size() != n.div_ceil(2) - (r % 2) * (n % 2) {
        return fail(
            "all-reduce of tensors in a group",
            format!("sum {g0} over {} ranks", group.size()),
            format!("{} (ranks of parity {})", 2 * gwant, r % 2),
        );
    }
    drop(group);
    // A device backend must have reached its library, also on one rank.
    if comm.device_calls() == Some(0) {
        return fail(
            "device collectives",
            "no call reached the device library".into(),
            format!("{} calls", comm.backend()),
        );
    }
    let mut bytes = if r == 0 { b"from the coordinator".to_vec() } else { Vec::new() };
    comm.broadcast_bytes(0, &mut bytes)?;
    if bytes != b"from the coordinator" {
        return fail("broadcast", format!("{bytes:?}"), "the coordinator's bytes".into());
    }
    let g = comm.gather_bytes(0, &vec![r as u8; r + 1])?;
    if r == 0 && g != (0..n).map(|k| vec![k as u8; k + 1]).collect::<Vec<_>>() {
        return fail("gather", format!("{g:?}"), "rank k sends k+1 bytes of value k".into());
    }
    // Rank r sends (r, s) repeated s+1 times to rank s.
    let send: Vec<Vec<u8>> = (0..n).map(|s| vec![(r * 16 + s) as u8; s + 1]).collect();
    let recv = comm.all_to_all_bytes(send)?;
    let expect: Vec<Vec<u8>> = (0..n).map(|src| vec![(src * 16 + r) as u8; r + 1]).collect();
    if recv != expect {
        return fail("all-to-all", format!("{recv:?}"), format!("{expect:?}"));
    }
    comm.barrier()
}

/// True when an MPI launcher started this process (Open MPI, MPICH/Hydra, PMIx, Slurm's srun
/// with an MPI plugin).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Which collective backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommKind {
    /// MPI when started by an MPI launcher (mpirun, srun with PMI/PMIx), else local.
    Auto,
    /// A single process.
    Local,
    /// MPI (rsmpi).
    Mpi,
    /// MPI, with NCCL for CUDA tensors (feature `cuda`).
    Nccl,
}

/// Rank from the launcher's environment, before MPI is initialised (for printing errors once).
pub fn launcher_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Start the collective backend `kind` (the config's `comm`) and fix this rank's compute device
/// (`device`: the config's `device`)
/// ([`crate::device`]): MPI under a launcher (NCCL for CUDA tensors with `comm = "nccl"`, or
/// with `auto` on GPUs when the `cuda` feature is built and NCCL loads), else one process.
pub fn init(kind: CommKind, device: crate::device::DeviceChoice) -> Result<Box<dyn Collective>> {
    let use_mpi = match kind {
        CommKind::Local => false,
        CommKind::Mpi | CommKind::Nccl => true,
        CommKind::Auto => launched_by_mpi(),
    };
    if use_mpi {
        #[cfg(feature = "mpi")]
        {
            let c = mpi::MpiCollective::init()?;
            check_slurm_step(c.size())?;
            let (local_rank, local_size) = c.local_rank_size();
            let device = crate::device::choose(device, local_rank, local_size)?;
            let c = c.on(device);
            let want_nccl = match kind {
                CommKind::Nccl => true,
                CommKind::Auto if device.is_cuda() => {
                    let loadable = nccl_loadable();
                    if !loadable {
                        warn_at_start(format!(
                            "comm = \"auto\" on GPUs reduces through MPI (device tensors staged through the host), \
                             not NCCL: {}",
                            if cfg!(feature = "cuda") {
                                "libnccl.so or the CUDA driver cannot be loaded"
                            } else {
                                "this build has no NCCL (build with --features cuda)"
                            }
                        ));
                    }
                    loadable
                }
                _ => false,
            };
            if want_nccl {
                if !device.is_cuda() {
                    return Err(Error::config(
                        "config",
                        "comm",
                        "\"nccl\" reduces CUDA tensors: it needs device = \"cuda\"",
                    ));
                }
                #[cfg(feature = "cuda")]
                {
                    return Ok(Box::new(nccl::init(c, local_rank)?));
                }
                #[cfg(not(feature = "cuda"))]
                {
                    return Err(Error::config(
                        "config",
                        "comm",
                        "\"nccl\": this build has no NCCL (build with --features cuda)",
                    ));
                }
            }
            return with_test_link(Box::new(c));
        }
        #[cfg(not(feature = "mpi"))]
        {
            return Err(Error::Comm("this build has no MPI support (built without the `mpi` feature)".into()));
        }
    }
    check_slurm_step(1)?;
    let device = crate::device::choose(device, 0, 1)?;
    if kind == CommKind::Nccl {
        return Err(Error::config("config", "comm", "\"nccl\" needs an MPI launch (mpirun or srun --mpi=pmix)"));
    }
    with_test_link(Box::new(LocalCollective::on(device)))
}

/// `DARTSIF_DEVICE_LINK=host` (tests): the device path of GPU runs — flat buffers, a link with
/// its own communicator, ordering, polling and abort — with [`device_link::HostLink`] on the CPU,
/// so that CPU tests exercise it under whole runs. `DARTSIF_DEVICE_LINK_FAULT=async-error|hang|
/// refused@RANK` injects a fault on one rank.
fn with_test_link(host: Box<dyn Collective>) -> Result<Box<dyn Collective>> {
    match std::env::var("DARTSIF_DEVICE_LINK").as_deref() {
        Err(_) | Ok("") => Ok(host),
        Ok("host") => {
            let fault = match std::env::var("DARTSIF_DEVICE_LINK_FAULT") {
                Err(_) => None,
                Ok(v) => {
                    let bad = |m: String| Error::config("environment", "DARTSIF_DEVICE_LINK_FAULT", m);
                    let (f, r) = v.split_once('@').ok_or_else(|| bad(format!("'{v}' is not FAULT@RANK")))?;
                    let f: device_link::LinkFault = f.parse().map_err(bad)?;
                    let r: usize = r.parse().map_err(|_| bad(format!("'{r}' is not a rank")))?;
                    (r == host.rank()).then_some(f)
                }
            };
            let link = device_link::HostLink::new(host.split(0, host.rank())?, fault);
            let device = host.device();
            Ok(Box::new(device_link::DeviceCollective::new(link, host, device, device_link::timeout_from_env()?)))
        }
        Ok(v) => Err(Error::config("environment", "DARTSIF_DEVICE_LINK", format!("'{v}' is not a link (host)"))),
    }
}

/// Warnings of start-up (before a command has its log): kept until [`take_start_warnings`].
static START_WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn warn_at_start(msg: String) {
    START_WARNINGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(msg);
}

/// The warnings [`init`] met, once: the command logs them when its log exists (or prints them).
pub fn take_start_warnings() -> Vec<String> {
    std::mem::take(&mut *START_WARNINGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Whether NCCL can be used (the `cuda` feature is built and the libraries load).
fn nccl_loadable() -> bool {
    #[cfg(feature = "cuda")]
    {
        nccl::available()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Under `srun`, tasks that do not find each other (no or the wrong `--mpi` plugin) each start
/// as a world of one and would all run the whole job as rank 0: refuse that loudly.
fn check_slurm_step(world: usize) -> Result<()> {
    let tasks = std::env::var("SLURM_STEP_NUM_TASKS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
    if world == 1 && tasks > 1 {
        return Err(Error::Comm(format!(
            "srun started {tasks} tasks but each is an MPI world of 1: launch with `srun --mpi=pmix` (or your site's MPI plugin, see `srun --mpi=list`)"
        )));
    }
    Ok(())
}

/// Library versions for run reports.
pub fn mpi_library_version() -> Option<String> {
    #[cfg(feature = "mpi")]
    {
        mpi::library_version()
    }
    #[cfg(not(feature = "mpi"))]
    {
        None
    }
}

/// This rank's group when `units` independent work units share the job: `count` groups of
/// contiguous ranks (ranks of a node stay together), unit u run by group u mod count.
pub struct Groups {
    pub comm: Box<dyn Collective>,
    pub index: usize,
    pub count: usize,
}

impl Groups {
    /// Split `world` (collective). `ranks_per_unit` = 0: as many groups as units, up to one
    /// per rank; otherwise groups of that many ranks (at least one group).
    pub fn split(world: &dyn Collective, units: usize, ranks_per_unit: usize) -> Result<Groups> {
        let w = world.size();
        if ranks_per_unit > w {
            return Err(Error::config(
                "--ranks-per-job",
                "ranks-per-job",
                format!("{ranks_per_unit} ranks per job, but the job has only {w}"),
            ));
        }
        let want = match ranks_per_unit {
            0 => units.min(w),
            r => (w / r).min(units),
        }
        .max(1);
        // Groups of equal size (a divisor of the world): every unit runs on as many ranks, so
        // shards and micro-batches are the same in all of them.
        let count = (1..=want).rev().find(|d| w % d == 0).unwrap_or(1);
        let index = world.rank() * count / w;
        let comm = world.split(index, world.rank())?;
        Ok(Groups { comm, index, count })
    }

    /// Whether this group runs unit `u`.
    pub fn runs(&self, u: usize) -> bool {
        u % self.count == self.index
    }

    /// The end of a batch job's units (collective over `world`): every rank learns whether a
    /// unit failed (`failure`, this rank's message) or stopped on a signal anywhere. A failure
    /// returns this rank's message, else the first group's; a stop returns `stop()`.
    pub fn conclude(
        &self,
        world: &dyn Collective,
        failure: Option<String>,
        stopped: bool,
        stop: impl FnOnce() -> Error,
    ) -> Result<()> {
        let mut flags = [failure.is_some() as u8 as f64, stopped as u8 as f64];
        world.all_reduce_max_f64(&mut flags)?;
        let msgs = self.gather(world, &failure.iter().cloned().collect::<Vec<_>>())?;
        if flags[0] > 0.0 {
            let msg = failure.or_else(|| msgs.into_iter().next());
            return Err(Error::Invalid(
                msg.unwrap_or_else(|| "a work unit failed on another rank (see its log)".into()),
            ));
        }
        if flags[1] > 0.0 {
            return Err(stop());
        }
        Ok(())
    }

    /// Gather every group coordinator's records on the world coordinator (collective over
    /// `world`); other ranks get an empty list.
    pub fn gather<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        world: &dyn Collective,
        mine: &[T],
    ) -> Result<Vec<T>> {
        let bytes = if self.comm.is_coordinator() {
            postcard::to_stdvec(mine).map_err(|e| Error::Comm(format!("encode: {e}")))?
        } else {
            Vec::new()
        };
        let all = world.gather_bytes(0, &bytes)?;
        let mut out = Vec::new();
        for b in all.iter().filter(|b| !b.is_empty()) {
            let recs: Vec<T> = postcard::from_bytes(b).map_err(|e| Error::Comm(format!("decode: {e}")))?;
            out.extend(recs);
        }
        Ok(out)
    }
}

/// An error crossing ranks with its kind (and so its exit status) kept.
#[derive(serde::Serialize, serde::Deserialize)]
enum SharedError {
    Path(String, String),
    Config(String, String, String),
    Stopped(String, String),
    Other(String),
}

/// Run `f` on the coordinator alone (writing tables, reading results) and share its outcome:
/// every rank returns the same `Ok` or error, so a failure on the coordinator cannot leave the
/// other ranks waiting in their next collective (collective).
pub fn on_coordinator(comm: &dyn Collective, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let mine: Option<Option<SharedError>> = comm.is_coordinator().then(|| {
        f().err().map(|e| match e {
            Error::Path { path, msg } => SharedError::Path(path.display().to_string(), msg),
            Error::Config { origin, key, msg } => SharedError::Config(origin, key, msg),
            Error::Stopped { at, checkpoint } => SharedError::Stopped(at, checkpoint),
            other => SharedError::Other(other.to_string()),
        })
    });
    match broadcast_value(comm, 0, mine.as_ref())? {
        None => Ok(()),
        Some(SharedError::Path(path, msg)) => Err(Error::Path { path: path.into(), msg }),
        Some(SharedError::Config(origin, key, msg)) => Err(Error::Config { origin, key, msg }),
        Some(SharedError::Stopped(at, checkpoint)) => Err(Error::Stopped { at, checkpoint }),
        Some(SharedError::Other(msg)) => Err(Error::Invalid(msg)),
    }
}
