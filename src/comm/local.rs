use super::Collective;
use crate::error::Result;

/// A job of one process: every collective is the identity. `Default` computes on the CPU.
#[derive(Debug, Clone, Copy)]
pub struct LocalCollective {
    device: tch::Device,
}

impl Default for LocalCollective {
    fn default() -> Self {
        Self::on(tch::Device::Cpu)
    }
}

impl LocalCollective {
    /// One process computing on `device`.
    pub fn on(device: tch::Device) -> Self {
        Self { device }
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "local"
    }
    fn device(&self) -> tch::Device {
        self.device
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_max_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_min_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _root: usize, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn gather_bytes(&self, _root: usize, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
    fn all_to_all_bytes(&self, send: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        Ok(send)
    }
    fn split(&self, _color: usize, _key: usize) -> Result<Box<dyn Collective>> {
        Ok(Box::new(*self))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
