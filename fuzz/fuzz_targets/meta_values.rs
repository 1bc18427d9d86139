//! Meta's stored values and keys, as RocksDB hands them back: every table's
//! value type and every key encoding. A damaged database must give typed
//! errors, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_meta::state::tables::{GarbageRecord, NodeRecord};
use tessera_meta::state::{Command, RecordedOutcome};
use tessera_meta::store::{KeyCodec, decode_value};
use tessera_meta::{FragmentKey, NodeFragmentKey, ObjectKey};
use tessera_proto::{
    AccessKey, BucketInfo, ChunkPlacement, ChunkRecord, CorruptReport, DirInfo, NodeAdmin, ObjectInfo, PartInfo,
    Permission, UploadInfo,
};
use tessera_types::{ChunkId, NodeId};

fn key<K: KeyCodec + std::fmt::Debug + PartialEq>(bytes: &[u8]) {
    if let Ok(k) = K::decode(bytes) {
        assert_eq!(K::decode(&k.encode()).ok().as_ref(), Some(&k));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let t = "fuzz";
    match which % 22 {
        0 => drop(decode_value::<NodeRecord>(t, rest)),
        1 => drop(decode_value::<BucketInfo>(t, rest)),
        2 => drop(decode_value::<ObjectInfo>(t, rest)),
        // A chunk record, and its placement read past the hashes: whenever
        // the record decodes, the placement is the same chunk.
        3 => {
            let placement = decode_value::<ChunkPlacement>(t, rest);
            if let Ok(rec) = decode_value::<ChunkRecord>(t, rest) {
                assert_eq!(placement.ok(), Some(ChunkPlacement::from(&rec)));
            }
        }
        4 => drop(decode_value::<GarbageRecord>(t, rest)),
        5 => drop(decode_value::<CorruptReport>(t, rest)),
        6 => drop(decode_value::<u64>(t, rest)),
        7 => drop(decode_value::<NodeAdmin>(t, rest)),
        8 => drop(decode_value::<AccessKey>(t, rest)),
        9 => drop(decode_value::<Permission>(t, rest)),
        10 => drop(decode_value::<UploadInfo>(t, rest)),
        11 => drop(decode_value::<PartInfo>(t, rest)),
        12 => drop(decode_value::<DirInfo>(t, rest)),
        13 => drop(decode_value::<RecordedOutcome>(t, rest)),
        14 => drop(decode_value::<()>(t, rest)),
        15 => key::<NodeId>(rest),
        16 => key::<ChunkId>(rest),
        17 => key::<u64>(rest),
        18 => key::<ObjectKey>(rest),
        19 => key::<NodeFragmentKey>(rest),
        20 => key::<FragmentKey>(rest),
        // Log entries (commands) as a replica would read them back.
        _ => drop(postcard::from_bytes::<Command>(rest)),
    }
});
