//! A pool of storage buffers. Creating and first binding a buffer is expensive in
//! WebGPU, and a UNet call frees and needs the same sizes over and over: a freed
//! tensor's buffer goes back here and the next tensor of its size class reuses it.
//! Reuse is safe without fences: all dispatches run in queue order.
//!
//! Memory: a request takes the smallest free buffer of its class or of a class up to
//! twice as large (so that maps of neighbouring sizes share buffers), and when it must
//! create a buffer, free buffers beyond [`FREE_SLACK`] are destroyed first, largest
//! first. So the pool never holds much more than the tensors in use: a whole 512x512
//! generation's peak is within `FREE_SLACK` plus one buffer of its peak in use
//! (BENCHMARKS.md, "Memory").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryStats {
    /// Bytes in buffers that exist now (in use or pooled).
    pub allocated: u64,
    /// Most bytes allocated at once since the last reset.
    pub peak: u64,
    /// Bytes held by weights.
    pub weights: u64,
    /// Bytes in buffers a tensor or weight uses now (`allocated` less the pooled free
    /// buffers).
    pub in_use: u64,
    /// Most bytes in use at once since the last reset: what a pool that never kept a
    /// free buffer would have needed.
    pub in_use_peak: u64,
}

impl MemoryStats {
    fn take(&mut self, bytes: u64) {
        self.in_use += bytes;
        self.in_use_peak = self.in_use_peak.max(self.in_use);
    }
}

/// Bytes of free buffers the pool keeps when it must create a new one.
pub const FREE_SLACK: u64 = 32 << 20;

pub struct BufferPool {
    /// Free buffers by size.
    free: BTreeMap<u64, Vec<wgpu::Buffer>>,
    /// Bytes in `free`.
    free_bytes: u64,
    stats: MemoryStats,
    /// The device's `max_buffer_size`: a size class never rounds past it.
    max_buffer: u64,
    /// The device's `max_storage_buffer_binding_size`: a tensor that fits one binding
    /// never gets a buffer that does not (kernels bind tensors whole).
    max_binding: u64,
}

impl BufferPool {
    pub fn new(max_buffer: u64, max_binding: u64) -> Self {
        BufferPool {
            free: BTreeMap::new(),
            free_bytes: 0,
            stats: MemoryStats::default(),
            max_buffer,
            max_binding,
        }
    }

    /// The smallest free buffer of at least `class` bytes and at most twice that (and
    /// within one binding when `class` is).
    fn take_free(&mut self, class: u64) -> Option<(u64, wgpu::Buffer)> {
        let mut hi = class.saturating_mul(2);
        if class <= self.max_binding {
            hi = hi.min(self.max_binding);
        }
        let size = *self
            .free
            .range(class..=hi.max(class))
            .find(|(_, v)| !v.is_empty())?
            .0;
        let buf = self.free.get_mut(&size)?.pop()?;
        self.free_bytes -= size;
        Some((size, buf))
    }

    /// Destroys free buffers, largest first, until at most `keep` bytes are free.
    fn evict(&mut self, keep: u64) {
        while self.free_bytes > keep {
            let Some((&size, bufs)) = self.free.iter_mut().rev().find(|(_, v)| !v.is_empty())
            else {
                break;
            };
            bufs.pop();
            self.free_bytes -= size;
            self.stats.allocated -= size;
        }
        self.free.retain(|_, v| !v.is_empty());
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
        let (class, buf) = match p.take_free(class) {
            Some(found) => found,
            None => {
                p.evict(FREE_SLACK);
                p.stats.allocated += class;
                p.stats.peak = p.stats.peak.max(p.stats.allocated);
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (class, buf)
            }
        };
        p.stats.take(class);
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
        p.evict(FREE_SLACK);
        p.stats.allocated += size;
        p.stats.weights += size;
        p.stats.take(size);
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
        self.stats.in_use_peak = self.stats.in_use;
    }

    pub fn trim(&mut self) {
        self.evict(0);
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
        p.stats.in_use -= self.class;
        if self.recycle {
            p.free.entry(self.class).or_default().push(buf);
            p.free_bytes += self.class;
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
