//! Collectives on device tensors through a [`DeviceLink`] (NCCL on GPUs, feature `cuda`), with
//! everything else (bytes, scalars, barriers, abort) on the host communicator (MPI).
//!
//! The link's rules live here, once, for every link, so that a test double ([`HostLink`]) can
//! drive them on a CPU:
//! - **Arguments are checked in release builds**: one flat, contiguous tensor on this rank's
//!   device, of a kind the link reduces; anything else is an error, not undefined behaviour.
//! - **Ordering does not depend on libtorch's stream.** Before a call, every kernel libtorch has
//!   queued on the device has finished ([`DeviceLink::fence`]: all streams of the device);
//!   after it, the host waits until the link's own stream is done. So it is correct whatever
//!   stream libtorch launches on (the legacy default stream, or a user's current stream).
//! - **No rank waits forever.** While waiting, the link's asynchronous error is polled
//!   (`ncclCommGetAsyncError`); on an error, or after `DARTSIF_COMM_TIMEOUT_S` seconds (default
//!   600), the communicator is aborted (`ncclCommAbort`) and the job ends with one message naming
//!   the rank ([`super::fail_alone`]: `MPI_Abort`, the launcher stops the others).
//! - **Every call is counted** ([`super::Collective::device_calls`]); `check-comm` fails when the
//!   device path was not exercised. One rank is not a shortcut: a 1-rank NCCL all-reduce is a
//!   valid call and is made.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::Collective;
use crate::error::{Error, Result};

/// What a device collective library does (NCCL, or the host double of the tests). Calls
/// enqueue work; [`DeviceLink::done`] says when it has completed.
pub trait DeviceLink: 'static {
    /// Name in messages and in [`Collective::backend`].
    fn name(&self) -> &'static str;
    /// Block until all work queued on the device has finished (every stream).
    fn fence(&self) -> Result<()>;
    /// Enqueue an in-place sum over the link's ranks of `flat` (contiguous, on the device).
    fn all_reduce(&self, flat: &mut Tensor) -> Result<()>;
    /// Enqueue an in-place broadcast of `flat` from `root`.
    fn broadcast(&self, flat: &mut Tensor, root: usize) -> Result<()>;
    /// Whether everything enqueued has completed.
    fn done(&self) -> Result<bool>;
    /// The communicator's asynchronous error, if one occurred.
    fn async_error(&self) -> Option<String>;
    /// Abort the communicator: pending work returns; the link is unusable afterwards.
    fn abort(&self);
    /// The link over the ranks of one color, ordered by key (collective over all its ranks).
    fn split(&self, color: usize, key: usize) -> Result<Self>
    where
        Self: Sized;
    /// Kinds the link reduces.
    fn supports(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half)
    }
}

/// How long a device collective may take before the job is ended: `DARTSIF_COMM_TIMEOUT_S`
/// (seconds, default 600: a slow all-reduce of a large model takes well under a second; ten
/// minutes is a hang).
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var("DARTSIF_COMM_TIMEOUT_S") {
        Err(_) => Ok(Duration::from_secs(600)),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(Error::config(
                "environment",
                "DARTSIF_COMM_TIMEOUT_S",
                format!("'{v}' is not a positive number of seconds"),
            )),
        },
    }
}

/// The host communicator for everything, the device link for tensors on `device`.
pub struct DeviceCollective<L: DeviceLink> {
    link: L,
    host: Box<dyn Collective>,
    device: Device,
    timeout: Duration,
    calls: Cell<usize>,
    /// Seconds in device collectives (fence to completion, as the host sees it).
    seconds: Cell<f64>,
}

impl<L: DeviceLink> DeviceCollective<L> {
    pub fn new(link: L, host: Box<dyn Collective>, device: Device, timeout: Duration) -> Self {
        DeviceCollective { link, host, device, timeout, calls: Cell::new(0), seconds: Cell::new(0.0) }
    }

    /// The link, for tests and for its own diagnostics.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// One call on one flat tensor: argument checks, fence, enqueue, wait (polling for errors).
    fn call(&self, what: &str, flat: &mut Tensor, enqueue: impl FnOnce(&L, &mut Tensor) -> Result<()>) -> Result<()> {
        if let Err(e) = self.check(what, flat) {
            return Err(super::fail_alone(self, e));
        }
        let t0 = Instant::now();
        // The timeout runs from the enqueue: the fence waits for libtorch's own queued work.
        let r = self.link.fence().and_then(|()| enqueue(&self.link, flat)).and_then(|()| self.wait(what));
        self.calls.set(self.calls.get() + 1);
        self.seconds.set(self.seconds.get() + t0.elapsed().as_secs_f64());
        r.map_err(|e| super::fail_alone(self, e))
    }

    fn check(&self, what: &str, flat: &Tensor) -> Result<()> {
        let name = self.link.name();
        if flat.device() != self.device {
            return Err(Error::Comm(format!(
                "{name} {what}: a tensor on {:?}, but this rank's device is {:?}",
                flat.device(),
                self.device
            )));
        }
        if !flat.is_contiguous() {
            return Err(Error::Comm(format!("{name} {what}: the buffer is not contiguous")));
        }
        if !self.link.supports(flat.kind()) {
            return Err(Error::Comm(format!("{name} {what}: unsupported kind {:?}", flat.kind())));
        }
        Ok(())
    }

    fn wait(&self, what: &str) -> Result<()> {
        let (name, t0) = (self.link.name(), Instant::now());
        let mut polls = 0u64;
        loop {
            if self.link.done()? {
                return Ok(());
            }
            if let Some(e) = self.link.async_error() {
                self.link.abort();
                return Err(Error::Comm(format!("{name} {what} failed: {e} (the communicator was aborted)")));
            }
            if t0.elapsed() > self.timeout {
                self.link.abort();
                return Err(Error::Comm(format!(
                    "{name} {what} did not complete within {} s (DARTSIF_COMM_TIMEOUT_S): another rank stopped \
                     taking part; the communicator was aborted",
                    self.timeout.as_secs_f64()
                )));
            }
            polls += 1;
            if polls < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Tensors of one kind on this rank's device, as one flat contiguous buffer.
    fn flatten(&self, what: &str, tensors: &[Tensor]) -> Result<Tensor> {
        let kind = tensors[0].kind();
        if tensors.iter().any(|t| t.kind() != kind || t.device() != self.device) {
            return Err(Error::Comm(format!("{} {what}: tensors of mixed kinds or devices", self.link.name())));
        }
        Ok(Tensor::cat(&tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0).contiguous())
    }

    fn scatter_back(flat: &Tensor, tensors: &[Tensor]) {
        let mut off = 0i64;
        for t in tensors {
            let len = t.numel() as i64;
            let mut t = t.shallow_clone();
            t.copy_(&flat.narrow(0, off, len).view_as(&t));
            off += len;
        }
    }
}

impl<L: DeviceLink> Collective for DeviceCollective<L> {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn size(&self) -> usize {
        self.host.size()
    }
    fn backend(&self) -> &'static str {
        self.link.name()
    }
    fn device(&self) -> Device {
        self.device
    }
    fn ranks_on_node(&self) -> usize {
        self.host.ranks_on_node()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.host.all_reduce_sum_f32(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.host.all_reduce_sum_f64(buf)
    }
    fn all_reduce_max_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.host.all_reduce_max_f64(buf)
    }
    fn all_reduce_min_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.host.all_reduce_min_f64(buf)
    }
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        self.host.broadcast_bytes(root, bytes)
    }
    fn gather_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.host.gather_bytes(root, bytes)
    }
    fn all_to_all_bytes(&self, send: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.host.all_to_all_bytes(send)
    }
    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }
    /// Groups get their own device communicator (`ncclCommSplit`), or, where the link cannot
    /// split, reduce through the host communicator — with a warning that says why.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>> {
        let host = self.host.split(color, key)?;
        let link = self.link.split(color, key);
        // All ranks take the same road: a group half on the device link and half on the host
        // would wait for each other forever.
        if !self.host.any(link.is_err())? {
            return Ok(Box::new(DeviceCollective::new(link?, host, self.device, self.timeout)));
        }
        let why = link.err().map_or_else(|| "it failed on another rank".to_string(), |e| e.to_string());
        tracing::warn!(
            "rank groups reduce through the host communicator (device tensors staged through the host), not {}: \
             splitting its communicator: {why}",
            self.link.name()
        );
        Ok(host)
    }
    fn reduce_seconds(&self) -> f64 {
        self.seconds.get() + self.host.reduce_seconds()
    }
    fn device_calls(&self) -> Option<usize> {
        Some(self.calls.get())
    }
    fn abort(&self, code: i32) -> ! {
        self.link.abort();
        self.host.abort(code)
    }

    /// Tensors on this rank's device: one flat buffer, one device all-reduce (also on one
    /// rank), copied back on the device. Tensors elsewhere: through the host.
    fn all_reduce_sum_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        if tensors[0].device() != self.device {
            return self.host.all_reduce_sum_tensors(tensors);
        }
        let _guard = tch::no_grad_guard();
        let mut flat = self.flatten("all-reduce", tensors).map_err(|e| super::fail_alone(self, e))?;
        self.call("all-reduce", &mut flat, |l, f| l.all_reduce(f))?;
        Self::scatter_back(&flat, tensors);
        Ok(())
    }

    fn broadcast_tensors(&self, root: usize, tensors: &[Tensor]) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        if tensors[0].device() != self.device {
            return self.host.broadcast_tensors(root, tensors);
        }
        let _guard = tch::no_grad_guard();
        let mut flat = self.flatten("broadcast", tensors).map_err(|e| super::fail_alone(self, e))?;
        self.call("broadcast", &mut flat, |l, f| l.broadcast(f, root))?;
        Self::scatter_back(&flat, tensors);
        Ok(())
    }
}

/// A fault the host double injects on one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    /// The call is enqueued, then the communicator reports an asynchronous error.
    AsyncError,
    /// The call never completes and reports nothing (a peer that stopped taking part).
    Hang,
    /// The call is refused when enqueued (`ncclInvalidUsage`).
    Refused,
}

impl std::str::FromStr for LinkFault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "async-error" => Ok(LinkFault::AsyncError),
            "hang" => Ok(LinkFault::Hang),
            "refused" => Ok(LinkFault::Refused),
            _ => Err(format!("'{s}' is not a link fault (async-error, hang, refused)")),
        }
    }
}

/// The test double of a device link, on the CPU: a real transport (the host communicator's
/// collectives on host tensors), completion after a few polls, and an optional injected fault.
/// It records what it was asked to do, in order. `DARTSIF_DEVICE_LINK=host` puts it under a
/// whole run (the CPU tests of the device path); `check-comm --device-link host` checks it.
pub struct HostLink {
    transport: Box<dyn Collective>,
    fault: Option<LinkFault>,
    /// Polls left until the enqueued work completes (`None`: never).
    pending: Cell<Option<usize>>,
    failed: Cell<bool>,
    aborted: Cell<bool>,
    log: RefCell<Vec<String>>,
}

impl HostLink {
    /// A link over `transport` (a communicator of its own, as NCCL has).
    pub fn new(transport: Box<dyn Collective>, fault: Option<LinkFault>) -> Self {
        HostLink {
            transport,
            fault,
            pending: Cell::new(Some(0)),
            failed: Cell::new(false),
            aborted: Cell::new(false),
            log: RefCell::new(Vec::new()),
        }
    }

    /// What the link was asked to do, in order ("fence", "all-reduce Float×5", "abort", …).
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn enqueue(&self, what: String, run: impl FnOnce(&dyn Collective) -> Result<()>) -> Result<()> {
        if self.aborted.get() {
            return Err(Error::Comm("host link: used after abort".into()));
        }
        self.log.borrow_mut().push(what);
        match self.fault {
            Some(LinkFault::Refused) => Err(Error::Comm("ncclInvalidUsage (injected by the host link)".into())),
            Some(LinkFault::AsyncError) => {
                self.failed.set(true);
                self.pending.set(None);
                Ok(())
            }
            Some(LinkFault::Hang) => {
                self.pending.set(None);
                Ok(())
            }
            None => {
                run(self.transport.as_ref())?;
                // Completes on the third poll: the wait loop is exercised, not skipped.
                self.pending.set(Some(2));
                Ok(())
            }
        }
    }
}

impl DeviceLink for HostLink {
    fn name(&self) -> &'static str {
        "host-link"
    }
    fn fence(&self) -> Result<()> {
        self.log.borrow_mut().push("fence".into());
        Ok(())
    }
    fn all_reduce(&self, flat: &mut Tensor) -> Result<()> {
        let what = format!("all-reduce {:?}x{}", flat.kind(), flat.numel());
        self.enqueue(what, |t| t.all_reduce_sum_tensors(std::slice::from_ref(flat)))
    }
    fn broadcast(&self, flat: &mut Tensor, root: usize) -> Result<()> {
        let what = format!("broadcast {:?}x{} from {root}", flat.kind(), flat.numel());
        self.enqueue(what, |t| t.broadcast_tensors(root, std::slice::from_ref(flat)))
    }
    fn done(&self) -> Result<bool> {
        match self.pending.get() {
            Some(0) => Ok(true),
            Some(k) => {
                self.pending.set(Some(k - 1));
                Ok(false)
            }
            None => Ok(false),
        }
    }
    fn async_error(&self) -> Option<String> {
        self.failed.get().then(|| "ncclRemoteError (injected by the host link)".to_string())
    }
    fn abort(&self) {
        if !self.aborted.replace(true) {
            self.log.borrow_mut().push("abort".into());
        }
    }
    fn split(&self, color: usize, key: usize) -> Result<Self> {
        Ok(HostLink::new(self.transport.split(color, key)?, self.fault))
    }
    fn supports(&self, kind: Kind) -> bool {
        // The host transport reduces f32 and f64.
        matches!(kind, Kind::Float | Kind::Double)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::LocalCollective;

    fn on_host(fault: Option<LinkFault>, timeout_ms: u64) -> DeviceCollective<HostLink> {
        let link = HostLink::new(Box::new(LocalCollective::default()), fault);
        DeviceCollective::new(
            link,
            Box::new(LocalCollective::default()),
            Device::Cpu,
            Duration::from_millis(timeout_ms),
        )
    }

    #[test]
    fn one_rank_still_calls_the_link_fenced_then_waited() {
        let c = on_host(None, 10_000);
        let t = [Tensor::from_slice(&[1f32, 2.0]), Tensor::from_slice(&[3f32])];
        c.all_reduce_sum_tensors(&t).unwrap();
        c.broadcast_tensors(0, &t).unwrap();
        assert_eq!(c.device_calls(), Some(2));
        assert_eq!(c.link().log(), ["fence", "all-reduce Floatx3", "fence", "broadcast Floatx3 from 0"]);
        // The identity on one rank, copied back into the caller's tensors.
        assert_eq!(Vec::<f32>::try_from(&t[0]).unwrap(), [1.0, 2.0]);
        crate::comm::self_check(&c).unwrap();
    }

    #[test]
    fn arguments_are_checked_in_release_builds() {
        let c = on_host(None, 10_000);
        let strided = Tensor::from_slice(&[1f32, 2.0, 3.0, 4.0]).view([2, 2]).tr();
        let e = c.call("all-reduce", &mut strided.shallow_clone(), |l, f| l.all_reduce(f)).unwrap_err();
        assert!(e.to_string().contains("not contiguous"), "{e}");
        let e = c.all_reduce_sum_tensors(&[Tensor::from_slice(&[1i64, 2])]).unwrap_err();
        assert!(e.to_string().contains("unsupported kind Int64"), "{e}");
        let e = c.all_reduce_sum_tensors(&[Tensor::from_slice(&[1f32]), Tensor::from_slice(&[1f64])]).unwrap_err();
        assert!(e.to_string().contains("mixed kinds"), "{e}");
        // Nothing reached the link.
        assert!(c.link().log().is_empty(), "{:?}", c.link().log());
    }

    #[test]
    fn an_asynchronous_error_aborts_the_communicator() {
        let c = on_host(Some(LinkFault::AsyncError), 10_000);
        let e = c.all_reduce_sum_tensors(&[Tensor::from_slice(&[1f32])]).unwrap_err();
        assert!(e.to_string().contains("host-link all-reduce failed: ncclRemoteError"), "{e}");
        assert_eq!(c.link().log(), ["fence", "all-reduce Floatx1", "abort"]);
    }

    #[test]
    fn a_hang_ends_at_the_timeout_with_an_abort() {
        let c = on_host(Some(LinkFault::Hang), 50);
        let t0 = Instant::now();
        let e = c.broadcast_tensors(0, &[Tensor::from_slice(&[1f64])]).unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5), "waited {:?}", t0.elapsed());
        assert!(e.to_string().contains("did not complete within 0.05 s"), "{e}");
        assert_eq!(c.link().log().last().map(String::as_str), Some("abort"));
    }

    #[test]
    fn a_refused_call_is_an_error() {
        let c = on_host(Some(LinkFault::Refused), 10_000);
        let e = c.all_reduce_sum_tensors(&[Tensor::from_slice(&[1f32])]).unwrap_err();
        assert!(e.to_string().contains("ncclInvalidUsage"), "{e}");
        assert_eq!(c.device_calls(), Some(1));
    }

    #[test]
    fn host_tensors_go_through_the_host() {
        let link = HostLink::new(Box::new(LocalCollective::default()), None);
        let c =
            DeviceCollective::new(link, Box::new(LocalCollective::default()), Device::Cuda(0), Duration::from_secs(1));
        c.all_reduce_sum_tensors(&[Tensor::from_slice(&[1f32])]).unwrap();
        assert_eq!(c.device_calls(), Some(0));
    }
}
