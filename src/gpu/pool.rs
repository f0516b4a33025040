//! A pool of storage buffers. Creating and first binding a buffer is expensive in
//! WebGPU, and a UNet call frees and needs the same sizes over and over: a freed
//! tensor's buffer goes back here and the next tensor of its size class reuses it.
//! Reuse is safe without fences: all dispatches run in queue order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    /// Bytes in buffers that exist now (in use or pooled).
    pub allocated: u64,
    /// Most bytes allocated at once since the last reset.
    pub peak: u64,
    /// Bytes held by weights.
    pub weights: u64,
}

pub struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: MemoryStats,
    /// The device's `max_buffer_size`: a size class never rounds past it.
    max_buffer: u64,
}

impl BufferPool {
    pub fn new(max_buffer: u64) -> Self {
        BufferPool {
            free: HashMap::new(),
            stats: MemoryStats::default(),
            max_buffer,
        }
    }
}

/// Rounds a size up to its class: a power of two split in sixteen steps, so that at
/// most 12.5 % is wasted and similar sizes share buffers.
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let p = bytes.next_power_of_two();
    // bytes > p/2, so a step of p/16 wastes at most 1/8 of the request
    let step = (p / 16).max(256);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub fn get(pool: &Arc<Mutex<BufferPool>>, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let mut p = pool.lock().unwrap();
        let class = size_class(bytes).min(p.max_buffer.max(bytes));
        let buf = match p.free.get_mut(&class).and_then(|v| v.pop()) {
            Some(b) => b,
            None => {
                p.stats.allocated += class;
                p.stats.peak = p.stats.peak.max(p.stats.allocated);
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        PooledBuffer {
            buf: Some(buf),
            class,
            pool: pool.clone(),
            recycle: true,
        }
    }

    /// A buffer that is never recycled (weights): counted, destroyed on drop.
    pub fn get_dedicated(
        pool: &Arc<Mutex<BufferPool>>,
        device: &wgpu::Device,
        bytes: u64,
        label: &str,
    ) -> PooledBuffer {
        // 16-byte multiples: vec4 kernels read weights as array<vec4<f32>>.
        let size = bytes.max(16).div_ceil(16) * 16;
        let mut p = pool.lock().unwrap();
        p.stats.allocated += size;
        p.stats.weights += size;
        p.stats.peak = p.stats.peak.max(p.stats.allocated);
        let buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        PooledBuffer {
            buf: Some(buf),
            class: size,
            pool: pool.clone(),
            recycle: false,
        }
    }

    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    pub fn reset_peak(&mut self) {
        self.stats.peak = self.stats.allocated;
    }

    pub fn trim(&mut self) {
        for (class, bufs) in self.free.drain() {
            self.stats.allocated -= class * bufs.len() as u64;
        }
    }
}

pub struct PooledBuffer {
    buf: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Mutex<BufferPool>>,
    recycle: bool,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.as_ref().unwrap()
    }
    /// Bytes held (the size class).
    pub fn size(&self) -> u64 {
        self.class
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let buf = self.buf.take().unwrap();
        let mut p = self.pool.lock().unwrap();
        if self.recycle {
            p.free.entry(self.class).or_default().push(buf);
        } else {
            p.stats.allocated -= self.class;
            p.stats.weights -= self.class;
            // Dropping the handle is enough: wgpu frees it once pending work is done.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;
    #[test]
    fn size_classes_waste_at_most_an_eighth() {
        for b in [
            1u64,
            255,
            256,
            1000,
            4096,
            4097,
            10_485_760,
            134_217_728,
            268_435_457,
        ] {
            let c = size_class(b);
            assert!(c >= b);
            assert!(c <= (b.max(256) * 9 / 8).max(512), "{b} -> {c}");
        }
    }
}
