use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// How a chunk is protected: Reed-Solomon `ec:K+M` (any K of K+M fragments
/// rebuild the chunk) or `rep:N` (N full copies). Decoding checks the
/// limits (`validate`): a policy from the network or the disk is never
/// `ec:0+0` or wider than the codec takes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PolicyFields")]
pub enum Policy {
    Erasure { data: u8, parity: u8 },
    Replicated { copies: u8 },
}

/// `Policy` as encoded, before its limits are checked.
#[derive(Deserialize)]
#[serde(rename = "Policy")]
enum PolicyFields {
    Erasure { data: u8, parity: u8 },
    Replicated { copies: u8 },
}

impl TryFrom<PolicyFields> for Policy {
    type Error = TypesError;

    fn try_from(f: PolicyFields) -> Result<Self, TypesError> {
        let p = match f {
            PolicyFields::Erasure { data, parity } => Policy::Erasure { data, parity },
            PolicyFields::Replicated { copies } => Policy::Replicated { copies },
        };
        p.validate()?;
        Ok(p)
    }
}

impl Policy {
    pub const MAX_DATA: u8 = 32;
    pub const MAX_PARITY: u8 = 16;
    pub const MAX_COPIES: u8 = 16;

    pub fn erasure(data: u8, parity: u8) -> Result<Self, TypesError> {
        let p = Policy::Erasure { data, parity };
        p.validate()?;
        Ok(p)
    }

    pub fn replicated(copies: u8) -> Result<Self, TypesError> {
        let p = Policy::Replicated { copies };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds; every policy that comes from outside passes here.
    pub fn validate(&self) -> Result<(), TypesError> {
        let ok = match *self {
            Policy::Erasure { data, parity } => {
                (1..=Self::MAX_DATA).contains(&data) && parity <= Self::MAX_PARITY
            }
            Policy::Replicated { copies } => (1..=Self::MAX_COPIES).contains(&copies),
        };
        if ok {
            Ok(())
        } else {
            Err(TypesError::InvalidPolicy(self.to_string()))
        }
    }

    /// Fragments written per chunk.
    pub fn fragments(&self) -> usize {
        match *self {
            Policy::Erasure { data, parity } => data as usize + parity as usize,
            Policy::Replicated { copies } => copies as usize,
        }
    }

    /// Fragments needed to read a chunk back.
    pub fn required(&self) -> usize {
        match *self {
            Policy::Erasure { data, .. } => data as usize,
            Policy::Replicated { .. } => 1,
        }
    }

    /// How many fragments (and so nodes) may be lost without losing data.
    pub fn tolerated_losses(&self) -> usize {
        self.fragments() - self.required()
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Erasure { data: 4, parity: 2 }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Erasure { data, parity } => write!(f, "ec:{data}+{parity}"),
            Policy::Replicated { copies } => write!(f, "rep:{copies}"),
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Policy {
    type Err = TypesError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TypesError::InvalidPolicy(s.to_string());
        let policy = if let Some(rest) = s.strip_prefix("ec:") {
            let (k, m) = rest.split_once('+').ok_or_else(bad)?;
            Policy::Erasure {
                data: k.parse().map_err(|_| bad())?,
                parity: m.parse().map_err(|_| bad())?,
            }
        } else if let Some(rest) = s.strip_prefix("rep:") {
            Policy::Replicated {
                copies: rest.parse().map_err(|_| bad())?,
            }
        } else {
            return Err(bad());
        };
        policy.validate().map_err(|_| bad())?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decoding_checks_the_limits() {
        let good = Policy::erasure(4, 2).unwrap();
        let bytes = postcard::to_allocvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<Policy>(&bytes).unwrap(), good);
        for bad in [
            Policy::Erasure { data: 0, parity: 0 },
            Policy::Erasure {
                data: 33,
                parity: 1,
            },
            Policy::Replicated { copies: 0 },
        ] {
            let bytes = postcard::to_allocvec(&bad).unwrap();
            assert!(postcard::from_bytes::<Policy>(&bytes).is_err(), "{bad}");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(serde_json::from_str::<Policy>(&json).is_err(), "{json}");
        }
    }

    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["ec:4+2", "ec:1+0", "ec:32+16", "rep:3", "rep:1"] {
            assert_eq!(s.parse::<Policy>().unwrap().to_string(), s);
        }
        for s in [
            "ec:0+2", "ec:33+1", "ec:4+17", "rep:0", "rep:17", "ec:4", "raid5", "ec:a+b", "",
        ] {
            assert!(s.parse::<Policy>().is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn counts() {
        let p: Policy = "ec:10+4".parse().unwrap();
        assert_eq!(
            (p.fragments(), p.required(), p.tolerated_losses()),
            (14, 10, 4)
        );
        let r: Policy = "rep:3".parse().unwrap();
        assert_eq!(
            (r.fragments(), r.required(), r.tolerated_losses()),
            (3, 1, 2)
        );
    }
}
