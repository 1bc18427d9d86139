use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::CodecError;

/// A systematic Reed-Solomon code over shards of equal length: the first `data`
/// shards are the input unchanged, the next `parity` shards are computed.
/// Implementations cache whatever per-(data, parity) tables they need.
pub trait ErasureBackend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Computes `parity.len()` parity shards from `data`; every shard has the
    /// same, even length.
    fn encode(&self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError>;

    /// Fills in the missing *data* shards (indices `< data`) from any `data`
    /// present shards. Parity shards that are missing stay missing.
    fn reconstruct_data(
        &self,
        data: usize,
        parity: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodecError>;

    /// Fills in every missing shard, data and parity, from any `data`
    /// present shards. The default rebuilds the data shards, then encodes
    /// the parity again if one is missing.
    fn reconstruct_all(
        &self,
        data: usize,
        parity: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodecError> {
        self.reconstruct_data(data, parity, shards)?;
        if shards[data..data + parity].iter().all(Option::is_some) {
            return Ok(());
        }
        let len = shards
            .iter()
            .flatten()
            .map(Vec::len)
            .next()
            .unwrap_or_default();
        let mut computed = vec![vec![0u8; len]; parity];
        {
            let refs = shards[..data]
                .iter()
                .map(|s| {
                    s.as_deref().ok_or(CodecError::NotEnoughFragments {
                        needed: data,
                        have: 0,
                    })
                })
                .collect::<Result<Vec<&[u8]>, _>>()?;
            self.encode(&refs, &mut computed)?;
        }
        for (slot, p) in shards[data..data + parity].iter_mut().zip(computed) {
            if slot.is_none() {
                *slot = Some(p);
            }
        }
        Ok(())
    }
}

/// The `reed-solomon-erasure` crate (GF(2^8), SIMD-accelerated C kernels).
#[derive(Default)]
pub struct ReedSolomonErasure {
    codecs: Mutex<HashMap<(usize, usize), Arc<reed_solomon_erasure::galois_8::ReedSolomon>>>,
}

impl ReedSolomonErasure {
    fn codec(
        &self,
        data: usize,
        parity: usize,
    ) -> Result<Arc<reed_solomon_erasure::galois_8::ReedSolomon>, CodecError> {
        let mut codecs = self.codecs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = codecs.get(&(data, parity)) {
            return Ok(c.clone());
        }
        let c = Arc::new(
            reed_solomon_erasure::galois_8::ReedSolomon::new(data, parity)
                .map_err(|e| CodecError::Backend(format!("{e:?}")))?,
        );
        codecs.insert((data, parity), c.clone());
        Ok(c)
    }
}

impl ErasureBackend for ReedSolomonErasure {
    fn name(&self) -> &'static str {
        "reed-solomon-erasure"
    }

    fn encode(&self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError> {
        self.codec(data.len(), parity.len())?
            .encode_sep(data, parity)
            .map_err(backend_error)
    }

    fn reconstruct_data(
        &self,
        data: usize,
        parity: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodecError> {
        self.codec(data, parity)?
            .reconstruct_data(shards)
            .map_err(backend_error)
    }

    fn reconstruct_all(
        &self,
        data: usize,
        parity: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodecError> {
        self.codec(data, parity)?
            .reconstruct(shards)
            .map_err(backend_error)
    }
}

fn backend_error(e: reed_solomon_erasure::Error) -> CodecError {
    CodecError::Backend(format!("{e:?}"))
}

/// The `reed-solomon-simd` crate (O(n log n) Leopard-style code, runtime SIMD).
#[derive(Default)]
pub struct ReedSolomonSimd;

impl ErasureBackend for ReedSolomonSimd {
    fn name(&self) -> &'static str {
        "reed-solomon-simd"
    }

    fn encode(&self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), CodecError> {
        let out = reed_solomon_simd::encode(data.len(), parity.len(), data)
            .map_err(|e| CodecError::Backend(e.to_string()))?;
        for (dst, src) in parity.iter_mut().zip(out) {
            *dst = src;
        }
        Ok(())
    }

    fn reconstruct_data(
        &self,
        data: usize,
        parity: usize,
        shards: &mut [Option<Vec<u8>>],
    ) -> Result<(), CodecError> {
        let originals = shards[..data]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)));
        let recovery = shards[data..data + parity]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)));
        let restored = reed_solomon_simd::decode(data, parity, originals, recovery)
            .map_err(|e| CodecError::Backend(e.to_string()))?;
        for (i, shard) in restored {
            shards[i] = Some(shard);
        }
        Ok(())
    }
}

/// The backend the data path uses: the faster of the two in `benches/codec.rs`
/// on our machines (see BENCHMARKS.md).
pub fn default_backend() -> Arc<dyn ErasureBackend> {
    Arc::new(ReedSolomonErasure::default())
}
