//! Serde for fixed-size byte arrays (hashes, ids) as one byte string rather
//! than a sequence of numbers: postcard then copies them in one step
//! (decoding a chunk record was mostly visiting its hashes byte by byte).
//! Self-describing formats keep their shape: JSON still writes an array of
//! numbers, and either form is read back.
//!
//! Use with `#[serde(with = "tessera_types::fixed_bytes")]`.

use std::fmt;

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    d.deserialize_bytes(Fixed::<N>)
}

struct Fixed<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for Fixed<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(A::Error::invalid_length(N + 1, &self));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct H(#[serde(with = "super")] [u8; 4]);

    #[test]
    fn byte_strings_in_postcard_arrays_in_json() {
        let h = H([1, 2, 3, 4]);
        let p = postcard::to_allocvec(&h).unwrap();
        assert_eq!(p, [4, 1, 2, 3, 4]);
        assert_eq!(postcard::from_bytes::<H>(&p).unwrap(), h);
        assert!(postcard::from_bytes::<H>(&[3, 1, 2, 3]).is_err());
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(j, "[1,2,3,4]");
        assert_eq!(serde_json::from_str::<H>(&j).unwrap(), h);
        assert!(serde_json::from_str::<H>("[1,2,3]").is_err());
        assert!(serde_json::from_str::<H>("[1,2,3,4,5]").is_err());
    }
}
