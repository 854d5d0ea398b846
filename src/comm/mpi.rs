//! MPI collectives through rsmpi.

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::Collective;
use crate::error::{Error, Result};

/// Collectives over `MPI_COMM_WORLD` (which owns the MPI environment: dropping it finalises
/// MPI), or over a group split from it (drop groups before the world).
pub struct MpiCollective {
    world: SimpleCommunicator,
    /// Seconds spent in all-reduces.
    reducing: std::cell::Cell<f64>,
    /// This rank's index among the ranks of its node, and their number (of the world).
    local: (usize, usize),
    /// This rank's compute device (the CPU until [`MpiCollective::on`] chose another).
    device: tch::Device,
    // Declared last: dropped after `world`, finalising MPI (`None` for a split group).
    _universe: Option<Universe>,
}

impl MpiCollective {
    /// Initialise MPI (funneled: only the main thread calls MPI; rayon workers never do).
    pub fn init() -> Result<Self> {
        let (universe, _level) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Comm("MPI was already initialised".into()))?;
        let world = universe.world();
        // MPI's shared-memory split, once at start-up on every rank (collective).
        let node = world.split_shared(world.rank());
        let local = (node.rank() as usize, node.size() as usize);
        Ok(Self {
            world,
            reducing: std::cell::Cell::new(0.0),
            local,
            device: tch::Device::Cpu,
            _universe: Some(universe),
        })
    }
}

impl MpiCollective {
    /// This rank's index among the ranks on its node, and their number (MPI's shared-memory
    /// split): the GPU it drives.
    pub fn local_rank_size(&self) -> (usize, usize) {
        self.local
    }

    /// The same communicator, computing on `device` (chosen from the node-local rank).
    pub fn on(self, device: tch::Device) -> Self {
        Self { device, ..self }
    }

    /// The ranks of one color, ordered by `key` (MPI_Comm_split; collective over this group).
    pub fn split_group(&self, color: usize, key: usize) -> Result<Self> {
        let sub = self
            .world
            .split_by_color_with_key(mpi::topology::Color::with_value(color as i32), key as i32)
            .ok_or_else(|| Error::Comm(format!("MPI_Comm_split gave rank {} no group", self.rank())))?;
        Ok(Self {
            world: sub,
            reducing: std::cell::Cell::new(0.0),
            local: self.local,
            device: self.device,
            _universe: None,
        })
    }
}

/// The MPI library's version string, first line.
pub fn library_version() -> Option<String> {
    mpi::environment::library_version()
        .ok()
        .map(|s| s.trim_end_matches('\0').lines().next().unwrap_or("").trim().to_string())
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn device(&self) -> tch::Device {
        self.device
    }
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let t = std::time::Instant::now();
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, mpi::collective::SystemOperation::sum());
        self.reducing.set(self.reducing.get() + t.elapsed().as_secs_f64());
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let t = std::time::Instant::now();
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, mpi::collective::SystemOperation::sum());
        self.reducing.set(self.reducing.get() + t.elapsed().as_secs_f64());
        Ok(())
    }
    fn all_reduce_max_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, mpi::collective::SystemOperation::max());
        Ok(())
    }
    fn all_reduce_min_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, mpi::collective::SystemOperation::min());
        Ok(())
    }
    fn ranks_on_node(&self) -> usize {
        self.local.1
    }
    fn reduce_seconds(&self) -> f64 {
        self.reducing.get()
    }
    fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        let root_proc = self.world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root_proc.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        if len > 0 {
            root_proc.broadcast_into(&mut bytes[..]);
        }
        Ok(())
    }
    fn gather_bytes(&self, root: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        // An empty slice's dangling pointer is 0x1, which Open MPI reads as MPI_IN_PLACE: send
        // zero bytes from a real buffer instead.
        let dummy = [0u8; 1];
        let bytes = if bytes.is_empty() { &dummy[..0] } else { bytes };
        let root_proc = self.world.process_at_rank(root as i32);
        let len = bytes.len() as i32;
        if self.rank() == root {
            let mut lens = vec![0i32; self.size()];
            root_proc.gather_into_root(&len, &mut lens[..]);
            let displs: Vec<i32> = lens
                .iter()
                .scan(0i32, |acc, &l| {
                    let d = *acc;
                    *acc += l;
                    Some(d)
                })
                .collect();
            let total: i32 = lens.iter().sum();
            // At least one byte allocated: an empty Vec's pointer would read as MPI_IN_PLACE.
            let mut recv = vec![0u8; total.max(1) as usize];
            {
                let mut part = PartitionMut::new(&mut recv[..total as usize], &lens[..], &displs[..]);
                root_proc.gather_varcount_into_root(bytes, &mut part);
            }
            Ok(lens.iter().zip(&displs).map(|(&l, &d)| recv[d as usize..(d + l) as usize].to_vec()).collect())
        } else {
            root_proc.gather_into(&len);
            root_proc.gather_varcount_into(bytes);
            Ok(Vec::new())
        }
    }
    fn all_to_all_bytes(&self, send: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let n = self.size();
        if send.len() != n {
            return Err(Error::Comm(format!("all_to_all: {} buffers for {n} ranks", send.len())));
        }
        let count = |len: usize| {
            i32::try_from(len)
                .map_err(|_| Error::Comm(format!("all_to_all: a message of {len} bytes exceeds MPI's 2 GiB count")))
        };
        let send_counts: Vec<i32> = send.iter().map(|b| count(b.len())).collect::<Result<_>>()?;
        let mut recv_counts = vec![0i32; n];
        self.world.all_to_all_into(&send_counts[..], &mut recv_counts[..]);
        let displs = |c: &[i32]| -> Result<Vec<i32>> {
            let mut d = Vec::with_capacity(c.len());
            let mut acc = 0i64;
            for &x in c {
                d.push(count(acc as usize)?);
                acc += x as i64;
            }
            Ok(d)
        };
        let (sd, rd) = (displs(&send_counts)?, displs(&recv_counts)?);
        // Buffers of at least one byte: an empty Vec's pointer (0x1) would read as MPI_IN_PLACE.
        let mut flat: Vec<u8> = send.concat();
        let sent = flat.len();
        flat.push(0);
        let total: usize = recv_counts.iter().map(|&c| c as usize).sum();
        let mut recv = vec![0u8; total + 1];
        {
            let sbuf = mpi::datatype::Partition::new(&flat[..sent], &send_counts[..], &sd[..]);
            let mut rbuf = PartitionMut::new(&mut recv[..total], &recv_counts[..], &rd[..]);
            self.world.all_to_all_varcount_into(&sbuf, &mut rbuf);
        }
        Ok(recv_counts.iter().zip(&rd).map(|(&c, &d)| recv[d as usize..d as usize + c as usize].to_vec()).collect())
    }
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>> {
        Ok(Box::new(self.split_group(color, key)?))
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
