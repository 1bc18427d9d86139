//! A small typed-table layer over an ordered key-value store: one table per
//! column family, keys encoded so that byte order is the order scans need,
//! values versioned and length-checked.
//!
//! The store itself sits behind [`MetaStore`]: RocksDB in production
//! ([`RocksStore`]), a map in memory for tests and the simulator
//! ([`MemStore`]). A store hands out read views ([`ReadView`]: a consistent
//! snapshot) and takes whole write sets ([`WriteSet`]: applied atomically and
//! made durable before `write` returns). Commands read through an
//! [`Overlay`], a view of a snapshot plus the writes not yet written, so
//! several commands can share one write set and each sees the ones before it.

mod memory;
mod overlay;
#[cfg(feature = "server")]
mod rocks;

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use memory::MemStore;
pub use overlay::{Overlay, Undo};
#[cfg(feature = "server")]
pub use rocks::RocksStore;

use crate::MetaError;

/// Leading byte of every stored value; a value with another byte is refused,
/// so a format change can never be misread silently.
pub const VALUE_FORMAT: u8 = 7;

/// How a table's keys become bytes, in an order that scans rely on.
pub trait KeyCodec: Sized {
    fn encode(&self) -> Vec<u8>;
    /// Errors: `MetaError::Corrupt` for bytes no `encode` produced.
    fn decode(bytes: &[u8]) -> Result<Self, MetaError>;
}

/// A table: a column family with typed keys and values.
pub struct Table<K, V> {
    pub name: &'static str,
    _t: PhantomData<fn(K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            _t: PhantomData,
        }
    }
}

impl<K, V> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for Table<K, V> {}

/// The stored form of a value: the format byte, then postcard.
pub fn encode_value<V: Serialize>(v: &V) -> Result<Vec<u8>, MetaError> {
    postcard::to_extend(v, vec![VALUE_FORMAT])
        .map_err(|e| MetaError::Corrupt(format!("encoding value: {e}")))
}

/// Decodes a stored value of `table`. Errors: `MetaError::Corrupt` for an
/// empty value, another format byte, a malformed body or trailing bytes.
pub fn decode_value<V: DeserializeOwned>(table: &str, bytes: &[u8]) -> Result<V, MetaError> {
    let (v, trailing) = postcard::take_from_bytes(value_body(table, bytes)?)
        .map_err(|e| MetaError::Corrupt(format!("{table}: {e}")))?;
    if !trailing.is_empty() {
        return Err(MetaError::Corrupt(format!(
            "{table}: {} trailing bytes in value",
            trailing.len()
        )));
    }
    Ok(v)
}

/// Decodes the leading fields of a stored value of `table`: `V` names the
/// first fields of the stored type in order (postcard is not
/// self-describing, so the rest is left unread), for a reader that needs a
/// few small fields of a large record. Errors: `MetaError::Corrupt` for an
/// empty value, another format byte or a malformed head.
pub fn decode_value_head<'a, V: serde::Deserialize<'a>>(
    table: &str,
    bytes: &'a [u8],
) -> Result<V, MetaError> {
    postcard::take_from_bytes(value_body(table, bytes)?)
        .map(|(v, _rest)| v)
        .map_err(|e| MetaError::Corrupt(format!("{table}: {e}")))
}

/// A stored value of `table` after its format byte. Errors:
/// `MetaError::Corrupt` for an empty value or another format byte.
fn value_body<'a>(table: &str, bytes: &'a [u8]) -> Result<&'a [u8], MetaError> {
    let (&format, rest) = bytes
        .split_first()
        .ok_or_else(|| MetaError::Corrupt(format!("{table}: empty value")))?;
    if format != VALUE_FORMAT {
        return Err(MetaError::Corrupt(format!(
            "{table}: value format {format}, expected {VALUE_FORMAT}"
        )));
    }
    Ok(rest)
}

/// What a scan does next.
pub enum Step {
    Continue,
    /// Jump forward to this key (never backwards).
    Seek(Vec<u8>),
    Stop,
}

/// A position in one table of a read view, in key order.
pub trait Cursor {
    /// Moves to the first key at or after `key`.
    fn seek(&mut self, key: &[u8]);
    /// Moves to the last key of the table.
    fn seek_to_last(&mut self) -> Result<(), MetaError>;
    fn next(&mut self);
    fn prev(&mut self) -> Result<(), MetaError>;
    /// The entry here, or `None` past either end.
    fn entry(&self) -> Option<(&[u8], &[u8])>;
    /// Errors the underlying store met while moving.
    fn status(&self) -> Result<(), MetaError>;
}

/// What `ReadView::read_raw` runs on a value where it lies.
pub type ValueReader<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), MetaError>;

/// A consistent view of every table: one snapshot.
pub trait ReadView {
    fn get_raw(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError>;
    /// Whether `key` has a value, without copying it out.
    fn contains_raw(&self, table: &'static str, key: &[u8]) -> Result<bool, MetaError> {
        Ok(self.get_raw(table, key)?.is_some())
    }
    /// Runs `read` on the value of `key` where it lies, without copying it
    /// out; `false` (and `read` not run) if there is none.
    fn read_raw(
        &self,
        table: &'static str,
        key: &[u8],
        read: ValueReader,
    ) -> Result<bool, MetaError> {
        match self.get_raw(table, key)? {
            Some(v) => read(&v).map(|()| true),
            None => Ok(false),
        }
    }
    fn cursor(&self, table: &'static str) -> Result<Box<dyn Cursor + '_>, MetaError>;
    /// A cursor over `table` for keys below `upper` (exclusive). A store
    /// that can end its own iteration there (RocksDB's
    /// `iterate_upper_bound`) does, so that a seek past the last live key
    /// under a prefix stops at the bound instead of stepping over every
    /// deletion tombstone beyond it until the next live key, which may be
    /// in another bucket. Others give the unbounded cursor: callers still
    /// check each key they are given.
    fn cursor_below(
        &self,
        table: &'static str,
        upper: &[u8],
    ) -> Result<Box<dyn Cursor + '_>, MetaError> {
        let _ = upper;
        self.cursor(table)
    }
}

/// An ordered, durable key-value store with snapshots and atomic writes.
pub trait MetaStore: Send + Sync + 'static {
    /// A snapshot of every table as of now; later writes are not seen.
    fn read(&self) -> Box<dyn ReadView + '_>;
    /// Applies every change of `set` at once, durable (synced) before it
    /// returns. Errors: the store's, with nothing applied.
    fn write(&self, set: WriteSet) -> Result<(), MetaError>;
    /// Applies every change of `set` at once, visible to later reads and
    /// writes but durable only after the next `sync` returns (writes reach
    /// the disk in order: a sync covers every write before it). Errors: the
    /// store's, with nothing applied.
    fn write_buffered(&self, set: WriteSet) -> Result<(), MetaError> {
        self.write(set)
    }
    /// Makes every write before it durable. Errors: the store's (then
    /// nothing since the last successful sync may be assumed durable).
    fn sync(&self) -> Result<(), MetaError> {
        Ok(())
    }
}

/// Changes to apply together: per table, key -> new value or deletion.
#[derive(Debug, Default, Clone)]
pub struct WriteSet {
    pub(crate) tables: BTreeMap<&'static str, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.is_empty())
    }

    /// Number of puts and deletes.
    pub fn len(&self) -> usize {
        self.tables.values().map(|t| t.len()).sum()
    }

    pub(crate) fn set(&mut self, table: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.tables.entry(table).or_default().insert(key, value);
    }

    pub(crate) fn lookup(&self, table: &'static str, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.tables.get(table).and_then(|t| t.get(key))
    }
}

/// Typed reads over any view.
pub trait Read: ReadView {
    fn get<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        k: &K,
    ) -> Result<Option<V>, MetaError> {
        let mut value = None;
        self.read_raw(t.name, &k.encode(), &mut |bytes| {
            value = Some(decode_value(t.name, bytes)?);
            Ok(())
        })?;
        Ok(value)
    }

    fn contains<K: KeyCodec, V>(&self, t: Table<K, V>, k: &K) -> Result<bool, MetaError> {
        self.contains_raw(t.name, &k.encode())
    }

    /// Visits entries from `start` in key order while `visit` returns
    /// `Continue`; `Seek(key)` jumps forward to `key`.
    fn scan<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        start: &[u8],
        visit: impl FnMut(&[u8], K, V) -> Result<Step, MetaError>,
    ) -> Result<(), MetaError> {
        walk(self.cursor(t.name)?, t, start, b"", visit)
    }

    /// Visits the entries whose keys start with `prefix`, in key order,
    /// while `visit` returns `Continue` (`Seek` as in `scan`). The cursor
    /// is bounded by the prefix's successor (see `ReadView::cursor_below`).
    fn scan_prefix<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        prefix: &[u8],
        visit: impl FnMut(&[u8], K, V) -> Result<Step, MetaError>,
    ) -> Result<(), MetaError> {
        self.scan_prefix_from(t, prefix, prefix, visit)
    }

    /// `scan_prefix` starting at `start` instead of the prefix's first key
    /// (a listing's continuation): a `start` below `prefix` is the same as
    /// `prefix`, one past every key under it visits nothing. Bounded like
    /// `scan_prefix`, so a listing that reaches the end of its prefix does
    /// not step over the deleted keys that follow it.
    fn scan_prefix_from<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        prefix: &[u8],
        start: &[u8],
        visit: impl FnMut(&[u8], K, V) -> Result<Step, MetaError>,
    ) -> Result<(), MetaError> {
        let it = match prefix_successor(prefix) {
            Some(upper) => self.cursor_below(t.name, &upper)?,
            None => self.cursor(t.name)?,
        };
        walk(it, t, start.max(prefix), prefix, visit)
    }

    /// At most `limit` entries from the end backwards.
    fn scan_rev<K: KeyCodec, V: DeserializeOwned>(
        &self,
        t: Table<K, V>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, MetaError> {
        let mut it = self.cursor(t.name)?;
        it.seek_to_last()?;
        let mut out = Vec::new();
        while let Some((k, v)) = it.entry() {
            if out.len() >= limit {
                break;
            }
            out.push((K::decode(k)?, decode_value(t.name, v)?));
            it.prev()?;
        }
        it.status()?;
        Ok(out)
    }
}

impl<R: ReadView + ?Sized> Read for R {}

/// `scan`'s and `scan_prefix`'s walk: from `start` while keys start with
/// `prefix` (every key does with an empty one) and `visit` goes on.
fn walk<K: KeyCodec, V: DeserializeOwned>(
    mut it: Box<dyn Cursor + '_>,
    t: Table<K, V>,
    start: &[u8],
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], K, V) -> Result<Step, MetaError>,
) -> Result<(), MetaError> {
    it.seek(start);
    while let Some((k, v)) = it.entry() {
        if !k.starts_with(prefix) {
            break;
        }
        let value = decode_value(t.name, v)?;
        match visit(k, K::decode(k)?, value)? {
            Step::Continue => it.next(),
            Step::Seek(to) => it.seek(&to),
            Step::Stop => break,
        }
    }
    it.status()
}

/// The smallest key above every key that starts with `prefix`, or `None`
/// when there is none (an empty prefix, or one of only 0xff bytes).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both stores, and an overlay on each, must agree on every read.
    fn stores() -> Vec<(&'static str, Box<dyn MetaStore>, Option<tempfile::TempDir>)> {
        let mut out: Vec<(&'static str, Box<dyn MetaStore>, Option<tempfile::TempDir>)> =
            vec![("memory", Box::new(MemStore::new(&["t", "u"])), None)];
        #[cfg(feature = "server")]
        {
            let dir = tempfile::tempdir().unwrap();
            let rocks = RocksStore::open(dir.path(), &["t", "u"]).unwrap();
            out.push(("rocks", Box::new(rocks), Some(dir)));
        }
        out
    }

    fn keys(view: &dyn ReadView, table: &'static str, start: &[u8]) -> Vec<Vec<u8>> {
        let mut c = view.cursor(table).unwrap();
        c.seek(start);
        let mut out = Vec::new();
        while let Some((k, _)) = c.entry() {
            out.push(k.to_vec());
            c.next();
        }
        out
    }

    #[test]
    fn snapshots_do_not_see_later_writes_and_overlays_merge_in_order() {
        for (name, store, _dir) in stores() {
            let mut set = WriteSet::default();
            for k in [b"a", b"c", b"e"] {
                set.set("t", k.to_vec(), Some(vec![1]));
            }
            set.set("u", b"x".to_vec(), Some(vec![2]));
            store.write(set).unwrap();
            let before = store.read();
            let mut later = WriteSet::default();
            later.set("t", b"b".to_vec(), Some(vec![3]));
            store.write(later).unwrap();
            assert_eq!(keys(&*before, "t", b""), [b"a", b"c", b"e"], "{name}");
            assert_eq!(keys(&*store.read(), "t", b""), [b"a", b"b", b"c", b"e"]);
            // An overlay shows its own puts and hides its deletes, in order,
            // and seeks past both.
            let base = store.read();
            let mut ov = Overlay::new(&*base);
            ov.put_raw("t", b"d".to_vec(), vec![4]);
            ov.delete_raw("t", b"c".to_vec());
            ov.put_raw("t", b"a".to_vec(), vec![5]);
            assert_eq!(keys(&ov, "t", b""), [b"a", b"b", b"d", b"e"], "{name}");
            assert_eq!(keys(&ov, "t", b"c"), [b"d", b"e"], "{name}");
            assert_eq!(ov.get_raw("t", b"a").unwrap(), Some(vec![5]));
            assert_eq!(ov.get_raw("t", b"c").unwrap(), None);
            // Nested overlays see the outer one's writes.
            let mut inner = Overlay::new(&ov);
            inner.delete_raw("t", b"d".to_vec());
            inner.put_raw("t", b"f".to_vec(), vec![6]);
            assert_eq!(keys(&inner, "t", b""), [b"a", b"b", b"e", b"f"], "{name}");
            assert_eq!(keys(&ov, "t", b""), [b"a", b"b", b"d", b"e"], "{name}");
            drop(inner);
            // Journaled writes (a command's) land in the overlay and can be
            // taken back.
            let journaled = |ov: &mut Overlay<'_>, undo: &mut Vec<Undo>| {
                ov.set_journaled("t", b"d".to_vec(), None, undo);
                ov.set_journaled("t", b"f".to_vec(), Some(vec![6]), undo);
            };
            let mut undo = Vec::new();
            journaled(&mut ov, &mut undo);
            assert_eq!(keys(&ov, "t", b""), [b"a", b"b", b"e", b"f"], "{name}");
            ov.roll_back(undo);
            assert_eq!(keys(&ov, "t", b""), [b"a", b"b", b"d", b"e"], "{name}");
            journaled(&mut ov, &mut Vec::new());
            assert_eq!(keys(&ov, "t", b""), [b"a", b"b", b"e", b"f"], "{name}");
            let set = ov.into_writes();
            drop(base);
            store.write(set).unwrap();
            assert_eq!(
                keys(&*store.read(), "t", b""),
                [b"a", b"b", b"e", b"f"],
                "{name}"
            );
            let view = store.read();
            let last: Vec<(Vec<u8>, Vec<u8>)> = {
                let mut c = view.cursor("t").unwrap();
                c.seek_to_last().unwrap();
                let mut out = Vec::new();
                while let Some((k, v)) = c.entry() {
                    out.push((k.to_vec(), v.to_vec()));
                    c.prev().unwrap();
                }
                out
            };
            assert_eq!(last.len(), 4, "{name}");
            assert_eq!(last[0].0, b"f", "{name}");
            assert_eq!(last[3], (b"a".to_vec(), vec![5]), "{name}");
        }
    }

    /// A prefix scan sees exactly the keys under its prefix, in every store
    /// and through an overlay whose pending writes lie on both sides of the
    /// bound; the bound itself is the prefix's successor.
    #[test]
    fn prefix_scans_stop_at_the_end_of_their_prefix() {
        const T: Table<String, u64> = Table::new("t");
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(b""), None);
        let under = |view: &dyn ReadView, prefix: &str| {
            let mut out = Vec::new();
            view.scan_prefix(T, prefix.as_bytes(), |_, k: String, v: u64| {
                out.push((k, v));
                Ok(Step::Continue)
            })
            .unwrap();
            out
        };
        for (name, store, _dir) in stores() {
            let mut set = WriteSet::default();
            for (i, k) in ["a", "ab", "abc", "ab\u{ff}", "ac", "b"].iter().enumerate() {
                set.set(
                    "t",
                    k.as_bytes().to_vec(),
                    Some(encode_value(&(i as u64)).unwrap()),
                );
            }
            // Deleted keys past the prefix: what the bound lets a store skip.
            for i in 0..100 {
                set.set("t", format!("ab~{i}").into_bytes(), None);
                set.set("t", format!("ad{i}").into_bytes(), None);
            }
            store.write(set).unwrap();
            let view = store.read();
            let keys = |v: Vec<(String, u64)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
            assert_eq!(
                keys(under(&*view, "ab")),
                ["ab", "abc", "ab\u{ff}"],
                "{name}"
            );
            assert_eq!(keys(under(&*view, "b")), ["b"], "{name}");
            assert!(under(&*view, "abd").is_empty(), "{name}");
            assert_eq!(under(&*view, "").len(), 6, "{name}");
            let mut ov = Overlay::new(&*view);
            ov.put_raw("t", b"abb".to_vec(), encode_value(&9u64).unwrap());
            ov.put_raw("t", b"ad".to_vec(), encode_value(&9u64).unwrap());
            ov.delete_raw("t", b"abc".to_vec());
            assert_eq!(keys(under(&ov, "ab")), ["ab", "abb", "ab\u{ff}"], "{name}");
            // A continuation starts inside the prefix, below it or past it.
            let from = |prefix: &str, start: &[u8]| {
                let mut out = Vec::new();
                view.scan_prefix_from(T, prefix.as_bytes(), start, |_, k: String, _: u64| {
                    out.push(k);
                    Ok(Step::Continue)
                })
                .unwrap();
                out
            };
            assert_eq!(from("ab", b"ab\0"), ["abc", "ab\u{ff}"], "{name}");
            assert_eq!(from("ab", b"a"), ["ab", "abc", "ab\u{ff}"], "{name}");
            assert!(from("ab", b"ab\xff").is_empty(), "{name}");
            assert!(from("ab", b"b").is_empty(), "{name}");
        }
    }

    #[test]
    fn values_refuse_other_formats_and_trailing_bytes() {
        let bytes = encode_value(&7u64).unwrap();
        assert_eq!(decode_value::<u64>("t", &bytes).unwrap(), 7);
        assert!(decode_value::<u64>("t", &[]).is_err());
        let mut other = bytes.clone();
        other[0] = VALUE_FORMAT + 1;
        assert!(decode_value::<u64>("t", &other).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(decode_value::<u64>("t", &long).is_err());
    }
}
