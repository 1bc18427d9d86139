//! One open device per export name, shared by every connection to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::device::{BlockDevice, DeviceError, Exports};

/// The open devices of a server, by export name, with how many connections
/// use each. [`Exports::open`] runs once per name while any connection uses
/// it and [`BlockDevice::close`] when the last one leaves; opens and closes
/// of one name are serialized (a new open waits for a close in progress),
/// other names are not held up.
pub(crate) struct ExportTable {
    exports: Arc<dyn Exports>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    users: usize,
    device: Option<Arc<dyn BlockDevice>>,
}

impl ExportTable {
    pub fn new(exports: Arc<dyn Exports>) -> Self {
        Self {
            exports,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn exports(&self) -> &dyn Exports {
        self.exports.as_ref()
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(name.to_string()).or_default().clone()
    }

    /// The open device for `name`, opening it if no connection uses it.
    ///
    /// Runs in a task of its own, so that a caller dropped mid-way (a
    /// handshake timeout) cancels neither [`Exports::open`] nor the
    /// bookkeeping: an export opened for nobody is released by the
    /// [`OpenExport`]'s drop.
    pub async fn acquire(self: &Arc<Self>, name: &str) -> Result<OpenExport, DeviceError> {
        let table = self.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let device = table.open_shared(&name).await?;
            Ok(OpenExport {
                table,
                name,
                device,
                released: false,
            })
        });
        task.await
            .unwrap_or_else(|e| Err(DeviceError::Io(format!("opening the export failed: {e}"))))
    }

    async fn open_shared(&self, name: &str) -> Result<Arc<dyn BlockDevice>, DeviceError> {
        let slot = self.slot(name);
        let result = {
            let mut state = slot.state.lock().await;
            let device = match &state.device {
                Some(device) => Ok(device.clone()),
                None => self.exports.open(name).await,
            };
            if let Ok(device) = &device {
                state.device = Some(device.clone());
                state.users += 1;
            }
            device
        };
        if result.is_err() {
            self.forget_if_idle(name, slot);
        }
        result
    }

    /// One user of `name` is done; the last one closes the device.
    async fn release(&self, name: &str) {
        let slot = self.slot(name);
        {
            let mut state = slot.state.lock().await;
            state.users = state.users.saturating_sub(1);
            if state.users == 0
                && let Some(device) = state.device.take()
            {
                device.close().await;
            }
        }
        self.forget_if_idle(name, slot);
    }

    /// Closes every open device now (flushing what it buffers, releasing
    /// what `open` took), whoever still uses it: for a server that stops.
    /// Connections still open get the device's errors from then on; one
    /// that opens the name again opens it anew.
    pub async fn close_all(&self) {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.values().cloned().collect()
        };
        for slot in slots {
            let mut state = slot.state.lock().await;
            if let Some(device) = state.device.take() {
                device.close().await;
            }
        }
    }

    /// Drops the slot of a name nobody uses, so that names tried once do
    /// not accumulate.
    fn forget_if_idle(&self, name: &str, slot: Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else is waiting on the slot,
        // and nobody can take it while the map is locked.
        let idle = Arc::strong_count(&slot) == 2
            && slot
                .state
                .try_lock()
                .map(|state| state.users == 0 && state.device.is_none())
                .unwrap_or(false);
        if idle {
            slots.remove(name);
        }
    }
}

/// One connection's use of an open export. Give it back with
/// [`OpenExport::release`]; dropped without that (a cancelled handshake, a
/// dropped connection future), it is released in a task of its own.
pub(crate) struct OpenExport {
    table: Arc<ExportTable>,
    pub name: String,
    pub device: Arc<dyn BlockDevice>,
    released: bool,
}

impl OpenExport {
    /// Releases the export, closing the device if this was its last user.
    pub async fn release(mut self) {
        self.released = true;
        self.table.release(&self.name).await;
    }
}

impl Drop for OpenExport {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let table = self.table.clone();
        let name = std::mem::take(&mut self.name);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { table.release(&name).await });
            }
            Err(_) => {
                tracing::error!(export = %name, "export dropped outside a runtime: its device stays open")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::memory::{MemoryDevice, MemoryExports};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_open_device_per_name_closed_by_the_last_user() {
        let exports = Arc::new(MemoryExports::new());
        let device = Arc::new(MemoryDevice::new(1 << 20, 4096));
        exports.insert("a", device.clone());
        let table = Arc::new(ExportTable::new(exports.clone()));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let table = table.clone();
                tokio::spawn(async move { table.acquire("a").await.map_err(|e| e.to_string()) })
            })
            .collect();
        let mut users = Vec::new();
        for handle in handles {
            users.push(handle.await.unwrap().unwrap());
        }
        assert_eq!(exports.opens("a"), 1);
        let last = users.pop().unwrap();
        for user in users {
            user.release().await;
        }
        assert_eq!(device.counters().closes.load(Ordering::Relaxed), 0);
        last.release().await;
        assert_eq!(device.counters().closes.load(Ordering::Relaxed), 1);
        // Opened afresh after the close; a guard dropped without release
        // still closes.
        drop(table.acquire("a").await.unwrap());
        for _ in 0..100 {
            if device.counters().closes.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(exports.opens("a"), 2);
        assert_eq!(device.counters().closes.load(Ordering::Relaxed), 2);
        // Unknown names fail and leave nothing behind.
        assert!(matches!(
            table.acquire("b").await,
            Err(DeviceError::NotFound(_))
        ));
        assert!(table.slots.lock().unwrap().is_empty());
    }
}
