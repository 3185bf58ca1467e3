//! Object keys, and the pure rule that turns what S3 lists into an upload's offset.
//!
//! ```text
//! PREFIX/info/ID                    the upload's record (info, multipart upload id, part size)
//! PREFIX/data/ID                    the multipart upload's key: the finished object
//! PREFIX/tail/ID/NNNNN-SSSSSSSSSSSS-TTTTTTTTTTTTTTTTTTTT
//!                                   a tail segment: bytes of part NNNNN (not uploaded yet),
//!                                   from byte SSSS… of that part on, written at time TTTT…
//!                                   (nanoseconds since the epoch, the store's clock)
//! PREFIX/keys/DIGEST                the id of a simple-protocol upload (its client key hashed)
//! ```
//!
//! The offset is the bytes of the parts a segment vouches for plus the live tail. An append
//! writes its segment only once every part it uploaded is acknowledged, so a segment naming
//! part `N` says that parts `1..N` are complete, each of the part size. Parts numbered `N` and
//! above never count, whatever `ListParts` shows: an append that uploads several parts at
//! once and dies may leave part `N + 2` acknowledged and part `N + 1` missing, and that
//! orphan must not be counted when a later append reaches `N + 2` (its bytes may not be the
//! ones the later append reported). The live tail is the segments naming the highest part,
//! contiguous from its start; segments naming lower parts were absorbed by those parts and
//! are obsolete. A crash between a part and its append's segment therefore loses the part's
//! new bytes (never reported, so the client sends them again) and counts none twice.

use resumable_core::UploadId;
use std::time::{Duration, SystemTime};

/// Keys of one store's objects, under its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Empty, or ends with `/`.
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Layout { prefix }
    }

    pub(crate) fn record(&self, id: &UploadId) -> String {
        format!("{}info/{id}", self.prefix)
    }

    pub(crate) fn records(&self) -> String {
        format!("{}info/", self.prefix)
    }

    pub(crate) fn data(&self, id: &UploadId) -> String {
        format!("{}data/{id}", self.prefix)
    }

    pub(crate) fn data_prefix(&self) -> String {
        format!("{}data/", self.prefix)
    }

    pub(crate) fn tails(&self) -> String {
        format!("{}tail/", self.prefix)
    }

    pub(crate) fn tail(&self, id: &UploadId) -> String {
        format!("{}tail/{id}/", self.prefix)
    }

    pub(crate) fn segment(&self, id: &UploadId, segment: &SegmentName) -> String {
        format!(
            "{}{:05}-{:012}-{:020}",
            self.tail(id),
            segment.part,
            segment.start,
            segment.written_nanos
        )
    }

    pub(crate) fn key_index(&self, digest: &str) -> String {
        format!("{}keys/{digest}", self.prefix)
    }

    pub(crate) fn key_indexes(&self) -> String {
        format!("{}keys/", self.prefix)
    }

    /// The upload a key under `under` (one of the prefixes above) belongs to.
    pub(crate) fn id_in(&self, under: &str, key: &str) -> Option<UploadId> {
        let rest = key.strip_prefix(under)?;
        let id = rest.split('/').next()?;
        id.parse().ok()
    }
}

/// What a tail segment's key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentName {
    /// The part its bytes belong to.
    pub(crate) part: u32,
    /// Where in that part they start.
    pub(crate) start: u64,
    /// When it was written (the store's clock).
    pub(crate) written_nanos: u64,
}

impl SegmentName {
    pub(crate) fn parse(name: &str) -> Option<SegmentName> {
        let mut fields = name.split('-');
        let part = fields.next()?.parse().ok()?;
        let start = fields.next()?.parse().ok()?;
        let written_nanos = fields.next()?.parse().ok()?;
        fields.next().is_none().then_some(SegmentName {
            part,
            start,
            written_nanos,
        })
    }
}

/// A tail segment as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) key: String,
    pub(crate) name: SegmentName,
    pub(crate) size: u64,
}

/// An acknowledged part as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedPart {
    pub(crate) number: u32,
    pub(crate) size: u64,
    pub(crate) e_tag: String,
}

/// An upload's bytes as S3 holds them while its multipart upload is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Complete parts: 1..=parts, each of the part size.
    pub(crate) parts: u32,
    /// Their bytes.
    pub(crate) parts_bytes: u64,
    /// The live tail, in order, contiguous from the start of part `parts + 1`.
    pub(crate) tail: Vec<Segment>,
    /// Segments absorbed by a part: to delete.
    pub(crate) obsolete: Vec<Segment>,
    /// The latest write time any segment records.
    pub(crate) last_written: Option<SystemTime>,
}

impl Stored {
    pub(crate) fn tail_bytes(&self) -> u64 {
        self.tail.iter().map(|segment| segment.size).sum()
    }

    pub(crate) fn offset(&self) -> u64 {
        self.parts_bytes + self.tail_bytes()
    }
}

/// The part the live tail belongs to: the highest a segment names (1 without segments).
pub(crate) fn live_part(segments: &[Segment]) -> u32 {
    segments
        .iter()
        .map(|segment| segment.name.part)
        .max()
        .unwrap_or(1)
}

/// Settles what S3 lists under an upload's tail (see the module docs).
pub(crate) fn settle(part_size: u64, segments: Vec<Segment>) -> Stored {
    let live = live_part(&segments);
    let parts = live - 1;
    let last_written = segments
        .iter()
        .map(|segment| SystemTime::UNIX_EPOCH + Duration::from_nanos(segment.name.written_nanos))
        .max();
    let (mut candidates, obsolete): (Vec<Segment>, Vec<Segment>) = segments
        .into_iter()
        .partition(|segment| segment.name.part == live);
    // Longest first among those starting at one position: a segment replaced by a longer one
    // at the same start (never written by this store, but harmless) adds nothing.
    candidates.sort_by(|a, b| {
        (a.name.start, b.size, b.name.written_nanos).cmp(&(
            b.name.start,
            a.size,
            a.name.written_nanos,
        ))
    });
    // Segments of the live part that start elsewhere (empty markers, or past a gap) are
    // neither counted nor obsolete: a marker records the part count and the write time.
    let mut tail = Vec::new();
    let mut position = 0;
    for segment in candidates {
        if segment.name.start == position && segment.size > 0 {
            position += segment.size;
            tail.push(segment);
        }
    }
    Stored {
        parts,
        parts_bytes: u64::from(parts) * part_size,
        tail,
        obsolete,
        last_written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(part: u32, start: u64, size: u64, at: u64) -> Segment {
        let name = SegmentName {
            part,
            start,
            written_nanos: at,
        };
        Segment {
            key: format!("{part:05}-{start:012}-{at:020}"),
            name,
            size,
        }
    }

    #[test]
    fn segment_names_round_trip() {
        let layout = Layout::new("/uploads/");
        let id = UploadId::random();
        let name = SegmentName {
            part: 12,
            start: 345,
            written_nanos: 6_789,
        };
        let key = layout.segment(&id, &name);
        assert!(key.starts_with("uploads/tail/"));
        let short = key.strip_prefix(&layout.tail(&id)).unwrap();
        assert_eq!(SegmentName::parse(short), Some(name));
        assert_eq!(layout.id_in(&layout.tails(), &key), Some(id));
        assert_eq!(SegmentName::parse("00001-2"), None);
        assert_eq!(SegmentName::parse("x-2-3"), None);
    }

    #[test]
    fn a_new_upload_holds_nothing() {
        let stored = settle(10, Vec::new());
        assert_eq!((stored.parts, stored.offset()), (0, 0));
    }

    #[test]
    fn tail_segments_chain_after_the_parts_they_vouch_for() {
        let segments = vec![segment(3, 0, 4, 1), segment(3, 4, 2, 2)];
        let stored = settle(10, segments);
        assert_eq!(stored.parts, 2);
        assert_eq!(stored.offset(), 26);
        assert_eq!(stored.tail.len(), 2);
    }

    /// Crash after the new segment was written, before the absorbed ones were deleted: they
    /// name a lower part and do not count.
    #[test]
    fn absorbed_segments_left_behind_do_not_count() {
        let segments = vec![segment(1, 0, 4, 1), segment(2, 0, 3, 5)];
        let stored = settle(10, segments);
        assert_eq!((stored.parts, stored.offset()), (1, 13));
        assert_eq!(stored.obsolete.len(), 1);
    }

    #[test]
    fn a_gap_ends_the_tail_and_empty_markers_add_nothing() {
        let segments = vec![
            segment(1, 0, 0, 1),
            segment(1, 0, 4, 2),
            segment(1, 7, 2, 3),
        ];
        let stored = settle(10, segments);
        assert_eq!(stored.offset(), 4);
        assert_eq!(
            stored.last_written,
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(3))
        );
    }

    /// An empty marker naming part 3 vouches for parts 1 and 2.
    #[test]
    fn a_marker_on_a_part_boundary_counts_the_parts_below_it() {
        let stored = settle(10, vec![segment(3, 0, 0, 1)]);
        assert_eq!((stored.parts, stored.offset()), (2, 20));
        assert!(stored.tail.is_empty());
    }
}
