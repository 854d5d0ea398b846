//! NCCL collectives on CUDA tensors (feature `cuda`), through cudarc: the crate's only unsafe
//! interop. The communicator's unique id travels over MPI; everything that is not a CUDA-tensor
//! reduction (bytes, scalars, barriers, abort) stays on MPI.
//!
//! Memory: libtorch owns every buffer. NCCL gets a raw device pointer to one flat, contiguous
//! tensor for the duration of one call ([`TorchBuf`] borrows it and never frees it).
//!
//! Ordering: libtorch launches its kernels on the device's legacy default stream, and the
//! communicator runs on cudarc's default stream of the same primary context — the same stream —
//! so backward kernels → all-reduce → optimiser kernels are ordered without host syncs.

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream, DevicePtrMut, DeviceSlice, SyncOnDrop};
use cudarc::nccl::{Comm, Id, ReduceOp};
use tch::{Device, Kind, Tensor};

use super::mpi::MpiCollective;
use super::Collective;
use crate::error::{Error, Result};

/// A libtorch tensor's device memory, lent to NCCL for one call.
struct TorchBuf<'a, T> {
    ptr: sys::CUdeviceptr,
    len: usize,
    stream: &'a Arc<CudaStream>,
    /// The tensor stays mutably borrowed (and alive) while NCCL may write it.
    _tensor: PhantomData<(&'a mut Tensor, T)>,
}

impl<'a, T> TorchBuf<'a, T> {
    /// `t` must be a contiguous CUDA tensor of element type `T`.
    fn new(t: &'a mut Tensor, stream: &'a Arc<CudaStream>) -> Self {
        debug_assert!(t.is_contiguous() && t.device().is_cuda());
        TorchBuf { ptr: t.data_ptr() as sys::CUdeviceptr, len: t.numel(), stream, _tensor: PhantomData }
    }
}

impl<T> DeviceSlice<T> for TorchBuf<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.stream
    }
}

impl<T> DevicePtrMut<T> for TorchBuf<'_, T> {
    fn device_ptr_mut<'b>(&'b mut self, _stream: &'b CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'b>) {
        // Same stream as libtorch's kernels: nothing to record or wait for.
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

/// MPI for everything, NCCL for CUDA tensors.
pub struct NcclCollective {
    // Dropped first: the communicator goes before the CUDA context and before MPI finalises.
    comm: Comm,
    stream: Arc<CudaStream>,
    ordinal: usize,
    /// Seconds in NCCL all-reduces (enqueue to completion as the host sees it).
    reducing: std::cell::Cell<f64>,
    mpi: MpiCollective,
}

fn nccl_err(what: &str, e: cudarc::nccl::result::NcclError) -> Error {
    Error::Comm(format!("NCCL {what} failed with ncclResult_t {:?}", e.0))
}

impl NcclCollective {
    /// Whether the CUDA driver and NCCL libraries can be loaded.
    pub fn available() -> bool {
        // SAFETY: these only try to dlopen the libraries.
        unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nccl::sys::is_culib_present() }
    }

    /// A communicator over the MPI world on GPU `ordinal` (the rank's node-local index).
    pub fn init(mpi: MpiCollective, ordinal: usize) -> Result<Self> {
        if !Self::available() {
            return Err(Error::Comm(
                "comm = \"nccl\": cannot load the CUDA driver or libnccl.so (NCCL's runtime package ships only \
                 libnccl.so.2: put a libnccl.so symlink on LD_LIBRARY_PATH, or install libnccl-dev)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::Comm(format!("CUDA device {ordinal}: {e:?}")))?;
        let stream = ctx.default_stream();
        let mut bytes = vec![0u8; 128];
        if mpi.rank() == 0 {
            let id = Id::new().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
            bytes = id.internal().iter().map(|&c| c as u8).collect();
        }
        mpi.broadcast_bytes(0, &mut bytes)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&bytes) {
            *d = *s as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), mpi.rank(), mpi.size(), Id::uninit(internal))
            .map_err(|e| nccl_err("ncclCommInitRank", e))?;
        Ok(NcclCollective { comm, stream, ordinal, reducing: std::cell::Cell::new(0.0), mpi })
    }

    fn reduce_flat(&self, flat: &mut Tensor) -> Result<()> {
        match flat.kind() {
            Kind::Float => {
                let mut b = TorchBuf::<f32>::new(flat, &self.stream);
                self.comm.all_reduce_in_place(&mut b, &ReduceOp::Sum).map(|_| ()).map_err(|e| nccl_err("all-reduce", e))
            }
            Kind::Double => {
                let mut b = TorchBuf::<f64>::new(flat, &self.stream);
                self.comm.all_reduce_in_place(&mut b, &ReduceOp::Sum).map(|_| ()).map_err(|e| nccl_err("all-reduce", e))
            }
            k => Err(Error::Comm(format!("NCCL all-reduce: unsupported kind {k:?}"))),
        }
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn size(&self) -> usize {
        self.mpi.size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }
    fn ranks_on_node(&self) -> usize {
        self.mpi.ranks_on_node()
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.mpi.all_reduce_sum_f32(buf)
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_sum_f64(buf)
    }
    fn all_reduce_max_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_max_f64(buf)
    }
    fn all_reduce_min_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_min_f64(buf)
    }
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        self.mpi.broadcast_bytes(root, bytes)
    }
    fn gather_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.mpi.gather_bytes(root, bytes)
    }
    fn all_to_all_bytes(&self, send: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        self.mpi.all_to_all_bytes(send)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
    /// Groups reduce through MPI (device tensors are staged through the host): ablation and
    /// seed groups exchange little next to their autograd work.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>> {
        tracing::warn!("rank groups reduce through MPI (device tensors staged through the host), not NCCL");
        Ok(Box::new(self.mpi.split_group(color, key)?))
    }
    fn reduce_seconds(&self) -> f64 {
        self.reducing.get() + self.mpi.reduce_seconds()
    }
    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }

    /// CUDA tensors on this rank's GPU: one flat device buffer, one NCCL all-reduce, copied
    /// back on the device. Others: through MPI.
    fn all_reduce_sum_tensors(&self, tensors: &[Tensor]) -> Result<()> {
        if self.size() == 1 || tensors.is_empty() {
            return Ok(());
        }
        if tensors[0].device() != Device::Cuda(self.ordinal) {
            return self.mpi.all_reduce_sum_tensors(tensors);
        }
        let kind = tensors[0].kind();
        if tensors.iter().any(|t| t.kind() != kind || t.device() != tensors[0].device()) {
            return Err(Error::Comm("NCCL all-reduce: tensors of mixed kinds or devices".into()));
        }
        let _guard = tch::no_grad_guard();
        let mut flat = Tensor::cat(&tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0).contiguous();
        let t0 = std::time::Instant::now();
        self.reduce_flat(&mut flat)?;
        // The host waits for the result only when it reads it; synchronise for an honest time.
        self.stream.synchronize().map_err(|e| Error::Comm(format!("CUDA stream: {e:?}")))?;
        self.reducing.set(self.reducing.get() + t0.elapsed().as_secs_f64());
        let mut off = 0i64;
        for t in tensors {
            let len = t.numel() as i64;
            let mut t = t.shallow_clone();
            t.copy_(&flat.narrow(0, off, len).view_as(&t));
            off += len;
        }
        Ok(())
    }
}
