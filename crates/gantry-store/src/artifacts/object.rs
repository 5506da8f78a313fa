//! What every backend shares about a stored object: where a digest lives inside a store (the
//! same relative key on disk and in a bucket), checking a file against its digest, and writing
//! a checked object out (a tar.zst unpacked, a single file copied).

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// `sha256/<2 hex>/<64 hex>` for a digest `sha256:<64 lowercase hex>`; anything else is refused,
/// so no digest can name a path of its choosing.
pub fn object_key(digest: &str) -> Result<String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("`{digest}` is not a sha256 digest")
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        bail!("`{digest}` is not a sha256 digest");
    }
    Ok(format!("sha256/{}/{hex}", &hex[..2]))
}

/// Hashes `file` and compares it with `digest`: missing or corrupt is an error that says which.
pub fn verify_file(file: &Path, digest: &str) -> Result<()> {
    let mut f = std::fs::File::open(file)
        .with_context(|| format!("the stored object for {digest} is missing"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    check_digest(hasher, digest)
}

/// Compares what `hasher` saw with `digest`.
pub fn check_digest(hasher: Sha256, digest: &str) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        bail!(
            "the stored object does not match its digest (expected {digest}, found {actual}): it is corrupt"
        );
    }
    Ok(())
}

/// Writes a checked object's content under `dest`: a tar.zst is unpacked there, any other media
/// type is written to `dest/file_name`.
pub fn write_out(object: &Path, media_type: &str, dest: &Path, file_name: &str) -> Result<()> {
    let f = std::fs::File::open(object)?;
    if media_type == super::TAR_ZSTD {
        let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(f)?);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive
            .unpack(dest)
            .with_context(|| format!("unpacking into {}", dest.display()))?;
    } else {
        let target = dest.join(file_name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::io::copy(
            &mut std::io::BufReader::new(f),
            &mut std::fs::File::create(&target)?,
        )
        .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}
