//! Writes not yet written, seen through a read view: what lets several
//! commands share one write set (group commit) while each reads the state
//! the ones before it left.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{Cursor, ReadView, ValueReader, WriteSet};
use crate::MetaError;

/// A read view of `base` with pending changes on top; its changes become one
/// [`WriteSet`] with [`Overlay::into_writes`].
pub struct Overlay<'a> {
    base: &'a dyn ReadView,
    writes: WriteSet,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn ReadView) -> Self {
        Overlay {
            base,
            writes: WriteSet::default(),
        }
    }

    pub fn put_raw(&mut self, table: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.writes.set(table, key, Some(value));
    }

    pub fn delete_raw(&mut self, table: &'static str, key: Vec<u8>) {
        self.writes.set(table, key, None);
    }

    /// `put_raw` or `delete_raw` (`value` `None`) that remembers in `undo`
    /// what it replaced, so that [`Overlay::roll_back`] can take it back:
    /// a command writes straight into its batch rather than into an
    /// overlay of its own that the batch then copies.
    pub fn set_journaled(
        &mut self,
        table: &'static str,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        undo: &mut Vec<Undo>,
    ) {
        let pending = self.writes.tables.entry(table).or_default();
        match pending.get_mut(&key) {
            // Replacing a pending change: only its value needs keeping.
            Some(slot) => {
                let before = std::mem::replace(slot, value);
                undo.push(Undo {
                    table,
                    key,
                    before: Some(before),
                });
            }
            None => {
                pending.insert(key.clone(), value);
                undo.push(Undo {
                    table,
                    key,
                    before: None,
                });
            }
        }
    }

    /// Takes back journaled changes, newest first.
    pub fn roll_back(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            let Some(pending) = self.writes.tables.get_mut(u.table) else {
                continue;
            };
            match u.before {
                Some(before) => {
                    pending.insert(u.key, before);
                }
                None => {
                    pending.remove(&u.key);
                }
            }
        }
    }

    pub fn into_writes(self) -> WriteSet {
        self.writes
    }

    pub fn writes(&self) -> &WriteSet {
        &self.writes
    }
}

impl ReadView for Overlay<'_> {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        match self.writes.lookup(table, key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get_raw(table, key),
        }
    }

    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        match self.writes.lookup(table, key) {
            Some(v) => Ok(v.is_some()),
            None => self.base.contains_raw(table, key),
        }
    }

    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        match self.writes.lookup(table, key) {
            Some(Some(v)) => read(v).map(|()| true),
            Some(None) => Ok(false),
            None => self.base.read_raw(table, key, read),
        }
    }

    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError> {
        let base = self.base.cursor(table)?;
        self.merged(table, base)
    }

    fn cursor_below(
        &self,
        table: &'static str,
        upper: &[u8],
    ) -> Result<Box<dyn Cursor + '_>, MetaError> {
        // Only the base is bounded: pending writes are few, and the caller
        // checks each key it is given.
        let base = self.base.cursor_below(table, upper)?;
        self.merged(table, base)
    }
}

impl Overlay<'_> {
    fn merged<'s>(
        &'s self,
        table: &'static str,
        base: Box<dyn Cursor + 's>,
    ) -> Result<Box<dyn Cursor + 's>, MetaError> {
        match self.writes.tables.get(table) {
            Some(pending) if !pending.is_empty() => Ok(Box::new(Merged {
                base,
                pending,
                mine: None,
                from_pending: false,
            })),
            _ => Ok(base),
        }
    }
}

/// What one journaled change replaced: the pending change at `key` before
/// it (`Some`; itself `None` for a pending deletion), or nothing pending
/// (`None`).
pub struct Undo {
    table: &'static str,
    key: Vec<u8>,
    before: Option<Option<Vec<u8>>>,
}

/// The base cursor and the pending changes of one table, merged in key
/// order: a pending value hides the base's at the same key, a pending
/// deletion hides it altogether. Forward only: commands never scan
/// backwards.
struct Merged<'a> {
    base: Box<dyn Cursor + 'a>,
    pending: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The first pending change at or after the position.
    mine: Option<(&'a Vec<u8>, &'a Option<Vec<u8>>)>,
    /// Whether the current entry is the pending one.
    from_pending: bool,
}

impl Merged<'_> {
    fn pending_from(&mut self, bound: Bound<&[u8]>) {
        self.mine = self
            .pending
            .range::<[u8], _>((bound, Bound::Unbounded))
            .next();
    }

    /// Skips deletions and decides which side the current entry is on.
    fn settle(&mut self) {
        loop {
            let Some((pk, pv)) = self.mine else {
                self.from_pending = false;
                return;
            };
            let base_key = self.base.entry().map(|(k, _)| k);
            match base_key.map(|b| pk.as_slice().cmp(b)) {
                Some(std::cmp::Ordering::Greater) => {
                    self.from_pending = false;
                    return;
                }
                order => {
                    if pv.is_some() {
                        self.from_pending = true;
                        return;
                    }
                    // A deletion: hide the base entry it deletes, if any.
                    if order == Some(std::cmp::Ordering::Equal) {
                        self.base.next();
                    }
                    self.pending_from(Bound::Excluded(pk.as_slice()));
                }
            }
        }
    }
}

impl Cursor for Merged<'_> {
    fn seek(&mut self, key: &[u8]) {
        self.base.seek(key);
        self.pending_from(Bound::Included(key));
        self.settle();
    }

    fn seek_to_last(&mut self) -> Result<(), MetaError> {
        Err(MetaError::Internal(
            "reverse scans inside a command are not supported".into(),
        ))
    }

    fn next(&mut self) {
        if self.from_pending {
            if let Some((pk, _)) = self.mine {
                if self.base.entry().is_some_and(|(k, _)| k == pk.as_slice()) {
                    self.base.next();
                }
                self.pending_from(Bound::Excluded(pk.as_slice()));
            }
        } else {
            self.base.next();
        }
        self.settle();
    }

    fn prev(&mut self) -> Result<(), MetaError> {
        self.seek_to_last()
    }

    fn entry(&self) -> Option<(&[u8], &[u8])> {
        if self.from_pending {
            match self.mine {
                Some((k, Some(v))) => Some((k.as_slice(), v.as_slice())),
                _ => None,
            }
        } else {
            self.base.entry()
        }
    }

    fn status(&self) -> Result<(), MetaError> {
        self.base.status()
    }
}
