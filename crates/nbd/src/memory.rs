//! A reference device in memory, for tests and examples: sparse (4 KiB
//! blocks in a map, never-written blocks are holes that read as zeros), with
//! counters that let a test see which calls reached the device.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::device::{BlockDevice, DeviceError, ExportSummary, Exports, Extent};

/// The granularity of [`MemoryDevice`]'s allocation: holes and data are
/// tracked per 4 KiB block whatever the advertised block size.
pub const MEMORY_BLOCK: u64 = 4096;

type Block = Box<[u8; MEMORY_BLOCK as usize]>;

/// A sparse in-memory [`BlockDevice`]: a `BTreeMap` from block index to
/// 4 KiB of data. Reads of absent blocks return zeros; trim and
/// write-zeroes (without `no_hole`) drop whole blocks and zero partial
/// ones; block status reports absent blocks as holes (`hole` and `zero`)
/// and present ones as data (`zero` when the block is all zeros).
/// Flush does nothing (memory is as durable as it gets) but is counted.
pub struct MemoryDevice {
    size: u64,
    block_size: u32,
    read_only: bool,
    description: String,
    blocks: Mutex<BTreeMap<u64, Block>>,
    counters: MemoryCounters,
}

/// Calls that reached a [`MemoryDevice`], for tests.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    /// `write` calls, and how many of them had `fua`.
    pub writes: AtomicU64,
    pub fua_writes: AtomicU64,
    pub flushes: AtomicU64,
    pub trims: AtomicU64,
    pub write_zeroes: AtomicU64,
    pub block_status: AtomicU64,
    pub closes: AtomicU64,
}

impl MemoryDevice {
    /// An empty (all holes) writable device of `size` bytes. `block_size`
    /// must be a power of two from 512 to 65536 and `size` a multiple of it
    /// (the device reports what it is given; the server refuses a device
    /// with another block size).
    pub fn new(size: u64, block_size: u32) -> Self {
        Self {
            size,
            block_size,
            read_only: false,
            description: String::new(),
            blocks: Mutex::new(BTreeMap::new()),
            counters: MemoryCounters::default(),
        }
    }

    /// The same device with a description for `NBD_INFO_DESCRIPTION`.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// A read-only copy of the current contents, as a snapshot would be.
    pub fn snapshot(&self) -> MemoryDevice {
        let blocks = self.lock().clone();
        MemoryDevice {
            size: self.size,
            block_size: self.block_size,
            read_only: true,
            description: self.description.clone(),
            blocks: Mutex::new(blocks),
            counters: MemoryCounters::default(),
        }
    }

    /// The calls counted so far.
    pub fn counters(&self) -> &MemoryCounters {
        &self.counters
    }

    /// Bytes held in allocated blocks (a multiple of [`MEMORY_BLOCK`]).
    pub fn allocated_bytes(&self) -> u64 {
        self.lock().len() as u64 * MEMORY_BLOCK
    }

    /// Reads synchronously (for test assertions).
    pub fn read_now(&self, offset: u64, len: usize) -> Vec<u8> {
        let blocks = self.lock();
        let mut out = vec![0u8; len];
        for_each_block(offset, len as u64, |index, in_block, at, n| {
            if let Some(block) = blocks.get(&index) {
                out[at..at + n].copy_from_slice(&block[in_block..in_block + n]);
            }
        });
        out
    }

    /// Writes synchronously (to fill a device before serving it).
    pub fn write_now(&self, offset: u64, data: &[u8]) {
        let mut blocks = self.lock();
        for_each_block(offset, data.len() as u64, |index, in_block, at, n| {
            let block = blocks
                .entry(index)
                .or_insert_with(|| Box::new([0u8; MEMORY_BLOCK as usize]));
            block[in_block..in_block + n].copy_from_slice(&data[at..at + n]);
        });
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Block>> {
        // A panic while holding the lock leaves whole blocks behind: the map
        // is still consistent, so keep serving it.
        self.blocks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn zero_range(&self, offset: u64, len: u64, keep_allocated: bool) {
        let mut blocks = self.lock();
        for_each_block(offset, len, |index, in_block, _, n| {
            if keep_allocated {
                let block = blocks
                    .entry(index)
                    .or_insert_with(|| Box::new([0u8; MEMORY_BLOCK as usize]));
                block[in_block..in_block + n].fill(0);
            } else if n as u64 == MEMORY_BLOCK {
                blocks.remove(&index);
            } else if let Some(block) = blocks.get_mut(&index) {
                block[in_block..in_block + n].fill(0);
            }
        });
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(DeviceError::Invalid(format!(
                "range {offset}+{len} beyond the device's {} bytes",
                self.size
            ))),
        }
    }

    fn check_writable(&self) -> Result<(), DeviceError> {
        if self.read_only {
            Err(DeviceError::ReadOnly("memory snapshot".into()))
        } else {
            Ok(())
        }
    }
}

/// Calls `f(block index, offset in block, offset in the range, bytes)` for
/// each 4 KiB block piece of `[offset, offset + len)`.
fn for_each_block(offset: u64, len: u64, mut f: impl FnMut(u64, usize, usize, usize)) {
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        let index = pos / MEMORY_BLOCK;
        let in_block = pos % MEMORY_BLOCK;
        let n = (MEMORY_BLOCK - in_block).min(end - pos);
        f(
            index,
            in_block as usize,
            (pos - offset) as usize,
            n as usize,
        );
        pos += n;
    }
}

#[async_trait]
impl BlockDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>, DeviceError> {
        self.check_range(offset, len as u64)?;
        Ok(self.read_now(offset, len as usize))
    }

    async fn write(&self, offset: u64, data: Vec<u8>, fua: bool) -> Result<(), DeviceError> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        self.write_now(offset, &data);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        if fua {
            self.counters.fua_writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        self.check_writable()?;
        self.check_range(offset, len as u64)?;
        self.zero_range(offset, len as u64, false);
        self.counters.trims.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        no_hole: bool,
        _fua: bool,
    ) -> Result<(), DeviceError> {
        self.check_writable()?;
        self.check_range(offset, len as u64)?;
        self.zero_range(offset, len as u64, no_hole);
        self.counters.write_zeroes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn block_status(&self, offset: u64, len: u32) -> Result<Vec<Extent>, DeviceError> {
        self.check_range(offset, len as u64)?;
        self.counters.block_status.fetch_add(1, Ordering::Relaxed);
        let blocks = self.lock();
        let mut extents: Vec<Extent> = Vec::new();
        for_each_block(offset, len as u64, |index, _, _, n| {
            let (hole, zero) = match blocks.get(&index) {
                None => (true, true),
                Some(block) => (false, block.iter().all(|&b| b == 0)),
            };
            match extents.last_mut() {
                Some(last) if last.hole == hole && last.zero == zero => last.len += n as u32,
                _ => extents.push(Extent {
                    len: n as u32,
                    hole,
                    zero,
                }),
            }
        });
        Ok(extents)
    }

    async fn close(&self) {
        self.counters.closes.fetch_add(1, Ordering::Relaxed);
    }
}

/// A fixed set of named [`MemoryDevice`]s as [`Exports`], for tests and
/// examples. Counts how often each name was opened.
#[derive(Default)]
pub struct MemoryExports {
    devices: Mutex<BTreeMap<String, Arc<MemoryDevice>>>,
    opens: Mutex<HashMap<String, u64>>,
}

impl MemoryExports {
    /// No exports yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) export `name`.
    pub fn insert(&self, name: impl Into<String>, device: Arc<MemoryDevice>) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), device);
    }

    /// The device behind `name`.
    pub fn device(&self, name: &str) -> Option<Arc<MemoryDevice>> {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// How many times [`Exports::open`] was called for `name`.
    pub fn opens(&self, name: &str) -> u64 {
        self.opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Exports for MemoryExports {
    async fn list(&self) -> Result<Vec<ExportSummary>, DeviceError> {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        Ok(devices
            .iter()
            .map(|(name, device)| ExportSummary {
                name: name.clone(),
                description: device.description.clone(),
            })
            .collect())
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, DeviceError> {
        let device = self
            .device(name)
            .ok_or_else(|| DeviceError::NotFound(name.to_string()))?;
        *self
            .opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holes_data_and_trim() {
        let d = MemoryDevice::new(64 * 1024, 512);
        d.write(4096 + 512, vec![7u8; 1024], false).await.unwrap();
        assert_eq!(d.read(4096, 2048).await.unwrap()[512..1536], [7u8; 1024]);
        assert_eq!(
            d.block_status(0, 16384).await.unwrap(),
            [
                Extent {
                    len: 4096,
                    hole: true,
                    zero: true
                },
                Extent {
                    len: 4096,
                    hole: false,
                    zero: false
                },
                Extent {
                    len: 8192,
                    hole: true,
                    zero: true
                },
            ]
        );
        // A partial trim zeroes; a whole-block trim makes a hole.
        d.trim(4096 + 512, 512).await.unwrap();
        assert_eq!(d.allocated_bytes(), 4096);
        d.trim(4096, 4096).await.unwrap();
        assert_eq!(d.allocated_bytes(), 0);
        d.write_zeroes(0, 4096, true, false).await.unwrap();
        assert_eq!(
            d.block_status(0, 4096).await.unwrap(),
            [Extent {
                len: 4096,
                hole: false,
                zero: true
            }]
        );
        assert!(matches!(
            d.snapshot().write(0, vec![1; 512], false).await,
            Err(DeviceError::ReadOnly(_))
        ));
    }
}
