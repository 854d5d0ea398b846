//! NCCL as a [`DeviceLink`] (feature `cuda`), through cudarc's raw bindings: the crate's only
//! unsafe interop. The communicator's unique id travels over MPI; the ordering, argument checks,
//! error polling and abort are [`DeviceCollective`]'s, tested on a CPU with its host double.
//!
//! Memory: libtorch owns every buffer. NCCL gets the raw device pointer of one flat, contiguous
//! tensor (checked by the caller in release builds) for the duration of one call, which the host
//! waits for before the tensor is touched again.
//!
//! Streams: NCCL runs on a stream of its own. Before a call, `torch::cuda::synchronize` waits for
//! every stream of the device (whatever stream libtorch launched on); after it, the host polls
//! the NCCL stream (`cuStreamQuery`) and the communicator's asynchronous error until done.

use std::cell::Cell;
use std::sync::Arc;

use cudarc::driver::{sys as cu, CudaContext, CudaStream};
use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use super::device_link::{timeout_from_env, DeviceCollective, DeviceLink};
use super::mpi::MpiCollective;
use super::Collective;
use crate::error::{Error, Result};

/// One NCCL communicator on one GPU, with its stream.
pub struct NcclLink {
    comm: sys::ncclComm_t,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    ordinal: usize,
    aborted: Cell<bool>,
}

fn nccl_err(what: &str, e: result::NcclError) -> Error {
    Error::Comm(format!("NCCL {what} failed with {:?}", e.0))
}

fn data_type(kind: Kind) -> Option<sys::ncclDataType_t> {
    Some(match kind {
        Kind::Float => sys::ncclDataType_t::ncclFloat32,
        Kind::Double => sys::ncclDataType_t::ncclFloat64,
        Kind::BFloat16 => sys::ncclDataType_t::ncclBfloat16,
        Kind::Half => sys::ncclDataType_t::ncclFloat16,
        _ => return None,
    })
}

/// Whether the CUDA driver and NCCL libraries can be loaded.
pub fn available() -> bool {
    // SAFETY: these only try to dlopen the libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nccl::sys::is_culib_present() }
}

/// MPI for everything, NCCL for CUDA tensors on GPU `ordinal` (the rank's node-local index).
pub fn init(mpi: MpiCollective, ordinal: usize) -> Result<DeviceCollective<NcclLink>> {
    if !available() {
        return Err(Error::Comm(
            "comm = \"nccl\": cannot load the CUDA driver or libnccl.so (NCCL's runtime package ships only \
             libnccl.so.2: put a libnccl.so symlink on LD_LIBRARY_PATH, or install libnccl-dev)"
                .into(),
        ));
    }
    let timeout = timeout_from_env()?;
    let ctx = CudaContext::new(ordinal).map_err(|e| Error::Comm(format!("CUDA device {ordinal}: {e:?}")))?;
    let stream = ctx.new_stream().map_err(|e| Error::Comm(format!("CUDA stream on device {ordinal}: {e:?}")))?;
    let mut bytes = vec![0u8; 128];
    if mpi.rank() == 0 {
        let id = result::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
        bytes = id.internal.iter().map(|&c| c as u8).collect();
    }
    mpi.broadcast_bytes(0, &mut bytes)?;
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    for (d, s) in id.internal.iter_mut().zip(&bytes) {
        *d = *s as std::ffi::c_char;
    }
    let mut comm = std::ptr::null_mut();
    // SAFETY: `comm` is a valid out-pointer; the id came from rank 0 of this world.
    unsafe { result::comm_init_rank(&mut comm, mpi.size() as i32, id, mpi.rank() as i32) }
        .map_err(|e| nccl_err("ncclCommInitRank", e))?;
    let link = NcclLink { comm, stream, ctx, ordinal, aborted: Cell::new(false) };
    Ok(DeviceCollective::new(link, Box::new(mpi), Device::Cuda(ordinal), timeout))
}

impl NcclLink {
    fn enqueue(&self, what: &str, flat: &mut Tensor, root: Option<usize>) -> Result<()> {
        if self.aborted.get() {
            return Err(Error::Comm(format!("NCCL {what}: the communicator was aborted")));
        }
        let dt = data_type(flat.kind()).ok_or_else(|| Error::Comm(format!("NCCL {what}: kind {:?}", flat.kind())))?;
        self.ctx.bind_to_thread().map_err(|e| Error::Comm(format!("CUDA context: {e:?}")))?;
        let ptr = flat.data_ptr();
        let stream = self.stream.cu_stream() as sys::cudaStream_t;
        // SAFETY: `ptr` addresses `numel` contiguous elements of `dt` on this communicator's
        // device (checked by DeviceCollective); the tensor outlives the call, which the host
        // waits for before returning it.
        unsafe {
            match root {
                None => result::all_reduce(ptr, ptr, flat.numel(), dt, sys::ncclRedOp_t::ncclSum, self.comm, stream),
                Some(r) => result::broadcast(ptr, ptr, flat.numel(), dt, r as i32, self.comm, stream),
            }
        }
        .map(|_| ())
        .map_err(|e| nccl_err(what, e))
    }
}

impl DeviceLink for NcclLink {
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn fence(&self) -> Result<()> {
        tch::Cuda::synchronize(self.ordinal as i64);
        Ok(())
    }
    fn all_reduce(&self, flat: &mut Tensor) -> Result<()> {
        self.enqueue("all-reduce", flat, None)
    }
    fn broadcast(&self, flat: &mut Tensor, root: usize) -> Result<()> {
        self.enqueue("broadcast", flat, Some(root))
    }
    fn done(&self) -> Result<bool> {
        // SAFETY: a stream of this link's context.
        match unsafe { cu::cuStreamQuery(self.stream.cu_stream()) } {
            cu::CUresult::CUDA_SUCCESS => Ok(true),
            cu::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            e => Err(Error::Comm(format!("CUDA stream of NCCL on device {}: {e:?}", self.ordinal))),
        }
    }
    fn async_error(&self) -> Option<String> {
        if self.aborted.get() {
            return None;
        }
        let mut err = sys::ncclResult_t::ncclSuccess;
        // SAFETY: a live communicator and a valid out-pointer.
        let r = unsafe { sys::ncclCommGetAsyncError(self.comm, &mut err) };
        match (r, err) {
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess) => None,
            (sys::ncclResult_t::ncclSuccess, e) => Some(format!("{e:?}")),
            (r, _) => Some(format!("ncclCommGetAsyncError returned {r:?}")),
        }
    }
    fn abort(&self) {
        if !self.aborted.replace(true) {
            // SAFETY: a live communicator, aborted once; not destroyed afterwards.
            let _ = unsafe { result::comm_abort(self.comm) };
        }
    }
    fn split(&self, color: usize, key: usize) -> Result<Self> {
        let mut sub = std::ptr::null_mut();
        // SAFETY: a live communicator; every rank of it calls this (collective); a null config
        // inherits the parent's.
        unsafe { sys::ncclCommSplit(self.comm, color as i32, key as i32, &mut sub, std::ptr::null_mut()) }
            .result()
            .map_err(|e| nccl_err("ncclCommSplit", e))?;
        Ok(NcclLink {
            comm: sub,
            stream: self.stream.clone(),
            ctx: self.ctx.clone(),
            ordinal: self.ordinal,
            aborted: Cell::new(false),
        })
    }
}

impl Drop for NcclLink {
    fn drop(&mut self) {
        if !self.aborted.get() {
            // SAFETY: a live communicator, destroyed once, before its context (held here).
            let _ = unsafe { result::comm_destroy(self.comm) };
        }
    }
}
