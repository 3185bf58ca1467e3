//! The committed length of an upload: how many bytes of its data file are known durable,
//! recorded beside it (`ID.len`) only after the data file was synced up to there.
//!
//! Why not just the data file's length: after a power cut the length and the bytes disagree.
//! The kernel may commit a longer length to the file system's journal (any other file's
//! `fsync` commits it; writing into a block the file already has updates the length at once)
//! while the bytes below it still wait in the page cache, so the file comes back longer than
//! what reached the disk, padded with zeros. The record is the offset instead: a status
//! reports `min(data file length, committed)`, and an append first cuts the data file back to
//! the committed length, so bytes that were never committed are never counted.
//!
//! The record is two 512-byte slots, written in turn, each with a sequence number and a
//! CRC-32: a write torn by a power cut leaves the other slot, one commit older, which is
//! still true (the data file holds at least that much). Each commit overwrites one slot in
//! place: no allocation, no length change, so its `fdatasync` is a data write, not a journal
//! commit.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per slot: a disk sector, the unit a disk writes whole.
const SLOT: usize = 512;
const MAGIC: &[u8; 4] = b"RLEN";
/// magic, sequence, length, CRC-32 of the three.
const RECORD: usize = 4 + 8 + 8 + 4;

/// A committed length as read from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Bytes of the data file known durable.
    pub(crate) length: u64,
    /// Which commit this was (each one is one more).
    sequence: u64,
}

/// Creates the record of a new, empty upload, durably (its directory entry is synced by the
/// caller, with the upload's info).
pub(crate) fn create(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let mut slots = [0u8; 2 * SLOT];
    slots[..RECORD].copy_from_slice(&encode(1, 0));
    file.write_all_at(&slots, 0)?;
    file.sync_all()
}

/// The committed length, or `None` when the upload has no record (created by a version of the
/// store that kept none: its data file's length is its offset).
pub(crate) fn read(path: &Path) -> io::Result<Option<Committed>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let newest = bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(decode)
        .max_by_key(|committed| committed.sequence);
    match newest {
        Some(committed) => Ok(Some(committed)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no valid committed length", path.display()),
        )),
    }
}

/// Records `length` as committed, durably; the caller has synced the data file up to there
/// and holds its lock. Creates the record if the upload had none.
pub(crate) fn store(path: &Path, length: u64) -> io::Result<()> {
    let Some(previous) = read(path)? else {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut slots = [0u8; 2 * SLOT];
        slots[..RECORD].copy_from_slice(&encode(1, length));
        file.write_all_at(&slots, 0)?;
        return file.sync_all();
    };
    if previous.length == length {
        return Ok(());
    }
    let sequence = previous.sequence + 1;
    let slot = (sequence % 2) as usize * SLOT;
    let file = OpenOptions::new().write(true).open(path)?;
    file.write_all_at(&encode(sequence, length), slot as u64)?;
    file.sync_data()
}

fn encode(sequence: u64, length: u64) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[..4].copy_from_slice(MAGIC);
    record[4..12].copy_from_slice(&sequence.to_le_bytes());
    record[12..20].copy_from_slice(&length.to_le_bytes());
    let crc = crc32fast::hash(&record[..20]);
    record[20..].copy_from_slice(&crc.to_le_bytes());
    record
}

fn decode(slot: &[u8]) -> Option<Committed> {
    let record = slot.get(..RECORD)?;
    let number =
        |range: std::ops::Range<usize>| record[range].try_into().ok().map(u64::from_le_bytes);
    let crc = u32::from_le_bytes(record[20..24].try_into().ok()?);
    if &record[..4] != MAGIC || crc32fast::hash(&record[..20]) != crc {
        return None;
    }
    Some(Committed {
        sequence: number(4..12)?,
        length: number(12..20)?,
    })
}

/// The offset of an upload: its data file's length, but never past the committed length.
pub(crate) fn offset(data_length: u64, committed: Option<Committed>) -> u64 {
    committed.map_or(data_length, |committed| data_length.min(committed.length))
}

/// The offset of an upload whose data file is `data_length` bytes long and whose record is at
/// `path`.
pub(crate) fn stored(path: &Path, data_length: u64) -> io::Result<u64> {
    Ok(offset(data_length, read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_record_means_none_any_other_read_error_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("absent.len")).unwrap().is_none());
        // A record that exists but cannot be read must not fall back to the data file's
        // length, which a power cut may have padded with zeros.
        let unreadable = dir.path().join("dir.len");
        std::fs::create_dir(&unreadable).unwrap();
        assert!(read(&unreadable).is_err());
        assert!(store(&unreadable, 5).is_err());
    }

    #[test]
    fn commits_alternate_slots_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.len");
        create(&path).unwrap();
        assert_eq!(read(&path).unwrap().map(|c| c.length), Some(0));
        for length in [10, 4096, 1 << 40] {
            store(&path, length).unwrap();
            assert_eq!(read(&path).unwrap().map(|c| c.length), Some(length));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
    }

    #[test]
    fn a_torn_slot_leaves_the_commit_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.len");
        create(&path).unwrap();
        store(&path, 100).unwrap();
        store(&path, 200).unwrap();
        // The newest commit (200) went to slot 1: tear it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 13] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().map(|c| c.length), Some(100));
    }

    #[test]
    fn no_record_is_none_and_a_corrupt_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.len");
        assert_eq!(read(&path).unwrap(), None);
        std::fs::write(&path, [7u8; 2 * SLOT]).unwrap();
        assert_eq!(read(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::remove_file(&path).unwrap();
        store(&path, 42).unwrap();
        assert_eq!(read(&path).unwrap().map(|c| c.length), Some(42));
    }

    #[test]
    fn the_offset_never_passes_the_committed_length() {
        let committed = Some(Committed {
            length: 777,
            sequence: 3,
        });
        assert_eq!(offset(4096, committed), 777);
        assert_eq!(offset(500, committed), 500);
        assert_eq!(offset(4096, None), 4096);
    }
}
