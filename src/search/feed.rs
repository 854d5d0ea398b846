//! The micro-batches of an epoch, decoded ahead by a background thread.

use tch::Tensor;

use crate::data::{AugKey, Dataset, HostBatch};
use crate::error::{Error, Result};

/// The micro-batches of one epoch, decoded in the order the steps consume them: by a background
/// thread up to `ahead` batches in advance, or on demand when `ahead` is 0.
pub struct Feed<'a> {
    rx: Option<std::sync::mpsc::Receiver<Result<HostBatch>>>,
    direct: std::collections::VecDeque<Vec<usize>>,
    data: &'a dyn Dataset,
    aug: Option<AugKey>,
    /// Where the batches go.
    device: tch::Device,
}

impl<'a> Feed<'a> {
    pub fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        data: &'a dyn Dataset,
        loads: Vec<Vec<usize>>,
        aug: Option<AugKey>,
        ahead: usize,
        device: tch::Device,
    ) -> Self
    where
        'a: 's,
    {
        if ahead == 0 {
            return Feed { rx: None, direct: loads.into(), data, aug, device };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(ahead);
        scope.spawn(move || {
            for chunk in loads {
                // A closed channel means the loop stopped (an error): stop decoding.
                if tx.send(HostBatch::load(data, &chunk, aug)).is_err() {
                    break;
                }
            }
        });
        Feed { rx: Some(rx), direct: Default::default(), data, aug, device }
    }

    /// The next micro-batch as `[n, C, H, W]` f32 images and `[n]` labels.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let batch = match &self.rx {
            Some(rx) => rx.recv().map_err(|_| Error::Invalid("the batch prefetch thread stopped".into()))??,
            None => {
                let chunk =
                    self.direct.pop_front().ok_or_else(|| Error::Invalid("no batches left in this epoch".into()))?;
                HostBatch::load(self.data, &chunk, self.aug)?
            }
        };
        Ok(batch.tensors(self.device))
    }
}
