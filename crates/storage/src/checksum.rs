//! Value framing: every stored value is `crc32(key ‖ value)` (CRC-32, IEEE polynomial; 4 bytes,
//! little endian) followed by the value. Covering the key too means a value that ends up under
//! the wrong key is caught, not just a flipped bit inside it.

use crate::{Error, Keyspace, display_key};

const CHECKSUM_BYTES: usize = 4;

fn checksum(key: &[u8], value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(value);
    hasher.finalize()
}

pub(crate) fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(CHECKSUM_BYTES + value.len());
    framed.extend_from_slice(&checksum(key, value).to_le_bytes());
    framed.extend_from_slice(value);
    framed
}

pub(crate) fn open(
    location: &str,
    keyspace: Keyspace,
    key: &[u8],
    framed: &[u8],
) -> Result<Vec<u8>, Error> {
    let corruption =
        || Error::Corruption { location: location.to_string(), keyspace, key: display_key(key) };
    if framed.len() < CHECKSUM_BYTES {
        return Err(corruption());
    }
    let (sum, value) = framed.split_at(CHECKSUM_BYTES);
    let expected = u32::from_le_bytes(sum.try_into().expect("4 bytes"));
    if checksum(key, value) != expected {
        return Err(corruption());
    }
    Ok(value.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_detection() {
        let framed = seal(b"k", b"value");
        assert_eq!(open("t", Keyspace::Mvcc, b"k", &framed).unwrap(), b"value");
        // Same bytes under another key: caught.
        assert!(open("t", Keyspace::Mvcc, b"j", &framed).is_err());
        // A flipped bit: caught.
        let mut flipped = framed.clone();
        flipped[6] ^= 0x01;
        assert!(open("t", Keyspace::Mvcc, b"k", &flipped).is_err());
        // Truncated: caught.
        assert!(open("t", Keyspace::Mvcc, b"k", &framed[..2]).is_err());
    }
}
