//! Backup files: what `Maintenance.Snapshot` streams (`etcdctl snapshot save`) and what
//! `strata snapshot restore` reads.
//!
//! ```text
//! "strata-snapshot-v1\n"   magic: names the format (an etcd bbolt file is refused by name)
//! <length:8, big endian>   bytes of the image
//! <image>                  the range's state machine image (`raftstore::snapshot`)
//! <zeros>                  padding to a multiple of 512 bytes
//! <sha256:32>              SHA-256 of everything before it
//! ```
//!
//! The trailer sits where etcd puts its own: `etcdctl snapshot save` accepts a stream only if it
//! ends with a SHA-256 after a multiple of 512 bytes, and `sha256sum` of the file minus its last
//! 32 bytes checks it with standard tools.

use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use strata_core::FIRST_RANGE_ID;
use strata_core::raftstore::snapshot;
use strata_storage::FjallEngine;

const MAGIC: &[u8] = b"strata-snapshot-v1\n";
const ALIGN: usize = 512;
const SHA256_BYTES: usize = 32;

/// A backup file's bytes around a state machine image.
pub fn frame(image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + image.len() + ALIGN + SHA256_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(image.len() as u64).to_be_bytes());
    out.extend_from_slice(image);
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The image inside a backup file, checked.
pub fn unframe(bytes: &[u8]) -> anyhow::Result<&[u8]> {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        bail!("not a Strata snapshot (an etcd snapshot cannot be restored into Strata)");
    };
    if bytes.len() % ALIGN != SHA256_BYTES {
        bail!("snapshot is truncated ({} bytes)", bytes.len());
    }
    let (body, digest) = bytes.split_at(bytes.len() - SHA256_BYTES);
    if Sha256::digest(body).as_slice() != digest {
        bail!("snapshot is damaged: its SHA-256 does not match");
    }
    let (length, image) = rest.split_first_chunk::<8>().context("snapshot is truncated")?;
    let length = u64::from_be_bytes(*length) as usize;
    image.get(..length).context("snapshot is truncated")
}

/// Restores a backup into an empty data directory, as the starting state of a new cluster:
/// start each member of it with `strata start` on its own restored copy.
pub fn restore(file: &Path, data_dir: &Path, wal_dir: Option<&Path>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let image = unframe(&bytes).with_context(|| file.display().to_string())?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let engine = FjallEngine::open_with_log_dir(data_dir, wal_dir)?;
    let applied = snapshot::restore_as_new(&engine, FIRST_RANGE_ID, image)
        .with_context(|| format!("cannot restore into {}", data_dir.display()))?;
    println!(
        "restored revision {} (compacted at {}) into {}",
        applied.revision,
        applied.compact_revision,
        data_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked() {
        let framed = frame(b"image");
        assert_eq!(unframe(&framed).unwrap(), b"image");
        assert_eq!(framed.len() % ALIGN, SHA256_BYTES, "etcdctl's size check");
        let mut damaged = framed.clone();
        damaged[MAGIC.len() + 9] ^= 1;
        assert!(unframe(&damaged).unwrap_err().to_string().contains("damaged"));
        assert!(unframe(&framed[..framed.len() - 1]).is_err());
        assert!(unframe(b"bbolt...").unwrap_err().to_string().contains("not a Strata snapshot"));
        assert!(unframe(MAGIC).is_err());
    }
}
