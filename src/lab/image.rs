//! A lab disk whose content is a raw disk image (one made with `mke2fs` and
//! a partitioning tool, or `qemu-img convert -O raw` of any image), so
//! backups and benchmarks read a real file system instead of the lab's
//! made-up one (`content`).
//!
//! The image is copied sparsely into the disk's flat extent: the image's
//! holes (SEEK_DATA / SEEK_HOLE) and every all-zero 4 KiB block inside its
//! data stay holes, as a thin VMDK on VMFS allocates only what the guest
//! wrote. The lab answers the allocated-areas query (`*`) from the flat
//! extent's holes (`Disk::allocated_blocks`), so a first full reads the
//! image's data, not the disk's capacity.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::content::MIB;
use super::disk::data_ranges;

/// The unit in which zeros inside the image's data are left out: the page
/// and file system block size, the smallest hole a file can have.
pub const ZERO_BLOCK_BYTES: usize = 4096;
const COPY_BUFFER_BYTES: usize = MIB as usize;

/// A raw disk image, opened and checked: a readable regular file that is
/// not empty.
#[derive(Debug)]
pub struct Image {
    pub path: PathBuf,
    pub len_bytes: u64,
    file: File,
}

impl Image {
    /// Opens the image at `path`; the error names it and says what is
    /// wrong.
    pub fn open(path: &Path) -> io::Result<Image> {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("disk image {}: {e}", path.display()));
        let file = File::open(path).map_err(named)?;
        let meta = file.metadata().map_err(named)?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "disk image {}: not a regular file; give a raw image file (`qemu-img convert -O raw` makes one)",
                    path.display()
                ),
            ));
        }
        if meta.len() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("disk image {}: the file is empty", path.display()),
            ));
        }
        // A file the kernel opens but will not read (a directory on some
        // systems, a FIFO) fails here, before any disk is made.
        file.read_at(&mut [0u8; 1], 0).map_err(named)?;
        Ok(Image {
            path: path.to_path_buf(),
            len_bytes: meta.len(),
            file,
        })
    }

    /// The capacity of a disk holding this image: its size rounded up to a
    /// MiB, or `wanted_bytes` (a whole number of MiB) when that is larger.
    /// Smaller than the image is refused.
    pub fn capacity_bytes(&self, wanted_bytes: Option<u64>) -> io::Result<u64> {
        let fits = self.len_bytes.div_ceil(MIB) * MIB;
        match wanted_bytes {
            None => Ok(fits),
            Some(w) if w >= self.len_bytes => Ok(w),
            Some(w) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "disk image {} is {} bytes, more than the disk size given ({w} bytes)",
                    self.path.display(),
                    self.len_bytes
                ),
            )),
        }
    }

    /// Writes the image into a new sparse file of `capacity_bytes` at
    /// `flat` (see [`copy_sparse`]); answers the bytes of data written.
    pub fn write_flat(&self, flat: &Path, capacity_bytes: u64) -> io::Result<u64> {
        let dst = File::create(flat)?;
        dst.set_len(capacity_bytes)?;
        let written = copy_sparse(&self.file, self.len_bytes, &dst).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "copying disk image {} to {}: {e}",
                    self.path.display(),
                    flat.display()
                ),
            )
        })?;
        dst.sync_all()?;
        Ok(written)
    }
}

/// Copies the first `len_bytes` of `src` to the same offsets of `dst` (a
/// sparse file at least as long), writing only data: `src`'s holes are
/// skipped without reading, and all-zero `ZERO_BLOCK_BYTES` blocks inside
/// its data are read but not written, so they stay holes in `dst`.
/// Answers the bytes written.
pub fn copy_sparse(src: &File, len_bytes: u64, dst: &File) -> io::Result<u64> {
    let ranges = match data_ranges(src, len_bytes) {
        Ok(r) => r,
        // A file system that cannot tell holes: read it all, zeros are
        // still left out.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => std::iter::once(0..len_bytes).collect(),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut written = 0u64;
    for range in ranges {
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(COPY_BUFFER_BYTES as u64) as usize;
            let chunk = &mut buf[..n];
            src.read_exact_at(chunk, at)?;
            for run in nonzero_runs(chunk) {
                dst.write_all_at(&chunk[run.clone()], at + run.start as u64)?;
                written += run.len() as u64;
            }
            at += n as u64;
        }
    }
    Ok(written)
}

/// The runs of `buf` made of `ZERO_BLOCK_BYTES` blocks (counted from the
/// start of `buf`; the last may be shorter) that are not all zeros.
fn nonzero_runs(buf: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, block) in buf.chunks(ZERO_BLOCK_BYTES).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let start = i * ZERO_BLOCK_BYTES;
        let end = start + block.len();
        match runs.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => runs.push(start..end),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse image: an MBR, data at 1 MiB and 3 MiB + 4 KiB (the second
    /// with a zero block inside), a hole between, a tail not on a MiB.
    fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("image.raw");
        let len = 5 * MIB as usize + 1000;
        let mut bytes = vec![0u8; len];
        bytes[..512].copy_from_slice(&crate::lab::boot::tests::mbr(0x83, 2048, 4096));
        bytes[MIB as usize..MIB as usize + 65536].fill(0x11);
        let at = 3 * MIB as usize + 4096;
        bytes[at..at + 3 * 4096].fill(0x22);
        bytes[at + 4096..at + 2 * 4096].fill(0);
        bytes[len - 10..].fill(0x33);
        let f = File::create(&path).unwrap();
        f.set_len(len as u64).unwrap();
        for (at, n) in [
            (0, 512),
            (MIB as usize, 65536),
            (at, 3 * 4096),
            (len - 10, 10),
        ] {
            f.write_all_at(&bytes[at..at + n], at as u64).unwrap();
        }
        (path, bytes)
    }

    #[test]
    fn a_sparse_copy_is_byte_identical_and_leaves_holes_and_zero_blocks_out() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = image(dir.path());
        let img = Image::open(&path).unwrap();
        let capacity = img.capacity_bytes(None).unwrap();
        assert_eq!(capacity, 6 * MIB);
        let flat = dir.path().join("flat");
        let written = img.write_flat(&flat, capacity).unwrap();
        // The MBR's sector and the tail's last 1000 bytes are in 4 KiB
        // blocks of their own; the zero block in the second area is not.
        assert_eq!(written, 4096 + 65536 + 2 * 4096 + 1000);
        let copy = std::fs::read(&flat).unwrap();
        assert_eq!(copy.len() as u64, capacity);
        assert_eq!(&copy[..bytes.len()], &bytes[..]);
        assert!(copy[bytes.len()..].iter().all(|&b| b == 0));
        let f = File::open(&flat).unwrap();
        let data: Vec<_> = data_ranges(&f, capacity).unwrap();
        let allocated: u64 = data.iter().map(|r| r.end - r.start).sum();
        assert!(allocated < 256 * 1024, "only data is allocated: {data:?}");
        for hole in [2 * MIB, 3 * MIB + 2 * 4096, 4 * MIB] {
            assert!(
                !data.iter().any(|r| r.contains(&hole)),
                "{hole} is a hole: {data:?}"
            );
        }
    }

    #[test]
    fn zero_runs_split_and_merge_by_block() {
        let mut buf = vec![0u8; 5 * ZERO_BLOCK_BYTES + 7];
        buf[1] = 1;
        buf[ZERO_BLOCK_BYTES + 5] = 1;
        buf[3 * ZERO_BLOCK_BYTES] = 1;
        buf[5 * ZERO_BLOCK_BYTES + 6] = 1;
        let b = ZERO_BLOCK_BYTES;
        assert_eq!(
            nonzero_runs(&buf),
            vec![0..2 * b, 3 * b..4 * b, 5 * b..5 * b + 7]
        );
        assert!(nonzero_runs(&vec![0u8; 3 * b]).is_empty());
    }

    #[test]
    fn a_dense_image_of_zeros_becomes_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("dense");
        std::fs::write(&src, vec![0u8; 2 * MIB as usize]).unwrap();
        let img = Image::open(&src).unwrap();
        let flat = dir.path().join("flat");
        assert_eq!(img.write_flat(&flat, 2 * MIB).unwrap(), 0);
        let f = File::open(&flat).unwrap();
        assert!(data_ranges(&f, 2 * MIB).unwrap().is_empty());
    }

    #[test]
    fn capacity_is_the_image_rounded_up_or_the_larger_size_given() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = image(dir.path());
        let img = Image::open(&path).unwrap();
        assert_eq!(img.capacity_bytes(Some(8 * MIB)).unwrap(), 8 * MIB);
        let err = img.capacity_bytes(Some(4 * MIB)).unwrap_err();
        assert!(
            err.to_string().contains("more than the disk size given"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_empty_or_directory_image_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.raw");
        let err = Image::open(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope.raw"), "{err}");
        let empty = dir.path().join("empty.raw");
        std::fs::write(&empty, b"").unwrap();
        assert!(
            Image::open(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let err = Image::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
