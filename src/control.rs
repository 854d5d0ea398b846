//! Control of a running job: the agreement of all ranks at a step boundary (stop requested,
//! a check failed somewhere) and fault injection for the tests (`[fault]`).

use crate::choice::choice;
use crate::comm::Collective;
use crate::error::Result;

choice! {
    /// A fault to inject (`fault.action`, for tests).
    pub enum FaultAction {
        None = "none",
        /// SIGKILL to itself.
        Kill = "kill",
        /// SIGTERM to itself.
        Signal = "signal",
        /// A NaN loss.
        Nan = "nan",
    }
}

/// Carry out a fault-injection action on this process (`[fault]`, for tests): `kill` (SIGKILL
/// to itself), `signal` (SIGTERM to itself, waiting until `stop` is raised), `nan` (returns true:
/// the caller poisons a value), `none`.
pub fn inject(action: FaultAction, stop: Option<&std::sync::atomic::AtomicBool>) -> bool {
    let pid = std::process::id();
    match action {
        FaultAction::Kill => {
            tracing::warn!("fault injection: SIGKILL to process {pid}");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
            std::thread::sleep(std::time::Duration::from_secs(60)); // not reached
            false
        }
        FaultAction::Signal => {
            tracing::warn!("fault injection: SIGTERM to process {pid}");
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
            // Let the handler run before the next boundary reads the flag.
            for _ in 0..100 {
                if stop.is_none_or(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        }
        FaultAction::Nan => true,
        FaultAction::None => false,
    }
}

/// Whether any rank raised `stop`, agreed by all ranks (one small all-reduce).
pub fn agree_stop(comm: &dyn Collective, stop: Option<&std::sync::atomic::AtomicBool>) -> Result<bool> {
    comm.any(stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)))
}

/// The step boundary's agreement, one small all-reduce: whether any rank raised `stop`, and
/// on how many ranks each of the `bad` checks failed.
pub fn agree_step<const N: usize>(
    comm: &dyn Collective,
    stop: Option<&std::sync::atomic::AtomicBool>,
    bad: [bool; N],
) -> Result<(bool, [usize; N])> {
    let local = stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
    let mut v: Vec<f64> = std::iter::once(local).chain(bad).map(|b| b as u8 as f64).collect();
    if comm.size() > 1 {
        comm.all_reduce_sum_f64(&mut v)?;
    }
    Ok((v[0] > 0.0, std::array::from_fn(|k| v[k + 1] as usize)))
}
