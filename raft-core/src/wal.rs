//! The file format under the Raft log: numbered segment files of
//! checksummed records, appended in order, one `fdatasync` per batch.
//!
//! Why not a B-tree store: a Raft log is written only at its end, read back
//! only at start-up (the node keeps the unpurged log in memory) and cut only
//! at its ends. A B-tree commit rewrites several scattered pages per
//! transaction; here a batch is one sequential write into space the segment
//! file already spans, then one `fdatasync`. On this project's machines that
//! made a durable batch about three times cheaper than a redb commit (see
//! docs/architecture.md), and the leader's flush is the serial stage of
//! every write.
//!
//! Invariants:
//! - a record is `len: u32 LE | crc32(payload): u32 LE | payload (JSON)`;
//!   in the newest segment, the first record that has length zero, runs past
//!   the file or fails its checksum ends the log (a write torn by a crash);
//!   the bytes after it are zeroed on open, before anything new is written;
//!   in an older segment such a record is corruption and refuses the open;
//! - records replay in segment order, then file order; later records win;
//! - every segment starts with a [`Record::Header`] holding the vote, the
//!   committed hint and the purge point as of its creation, so a prefix of
//!   old segments can be deleted once every entry in them is purged;
//! - a segment is created at its full size (sparse), so appends do not
//!   change the file's length and `fdatasync` has no size to write;
//! - a new segment and its header are durable (file and directory synced)
//!   before any record is written after them;
//! - records found on open are trusted only once they are durable: every
//!   segment is synced and dropped from the page cache before it is read
//!   (see `trust_only_the_disk`);
//! - fail-stop: the first failed write or sync poisons the log. Every later
//!   call fails with the first error, so nothing is ever reported durable
//!   after one (Linux may drop the dirty pages of a failed `fdatasync` and
//!   report the next one as a success, and the offset of a failed batch is
//!   unknown).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

use crate::{NodeId, TypeConfig};

/// Size a segment is created with. Appends go past it only for a batch that
/// would not fit even in a fresh segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Chunk in which the bytes past the valid end are checked and zeroed on
/// open.
const WIPE_CHUNK: usize = 1 << 20;

const FRAME: usize = 8;

/// One thing the log remembers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    /// First record of every segment.
    Header {
        vote: Option<Vote<NodeId>>,
        committed: Option<LogId<NodeId>>,
        purged: Option<LogId<NodeId>>,
    },
    Entries(Vec<Entry<TypeConfig>>),
    /// Delete every entry from this index on.
    Truncate(u64),
    /// Delete every entry up to and including this log id.
    Purge(LogId<NodeId>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
}

/// The header state as of the newest record written or replayed.
#[derive(Debug, Default, Clone, Copy)]
struct HeadState {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

impl HeadState {
    fn observe(&mut self, r: &Record) {
        match r {
            Record::Header {
                vote,
                committed,
                purged,
            } => {
                *self = HeadState {
                    vote: *vote,
                    committed: *committed,
                    purged: *purged,
                }
            }
            Record::Vote(v) => self.vote = Some(*v),
            Record::Committed(c) => self.committed = *c,
            Record::Purge(p) => self.purged = Some(*p),
            Record::Entries(_) | Record::Truncate(_) => {}
        }
    }

    fn header(&self) -> Record {
        Record::Header {
            vote: self.vote,
            committed: self.committed,
            purged: self.purged,
        }
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Largest entry index written to this segment.
    last_index: Option<u64>,
}

/// An open log directory, positioned at the end of its valid records.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    /// Oldest first; the last one is being written.
    segments: Vec<Segment>,
    file: File,
    offset: u64,
    head: HeadState,
    buf: Vec<u8>,
    segment_bytes: u64,
    /// The first I/O error; set, every later write fails with it.
    failed: Option<String>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016}.wal")
}

fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn encode(r: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(r).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(|_| corrupt("record over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Parse the records of one segment's bytes; returns them and the offset
/// where valid data ends.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, usize, Option<String>) {
    let mut at = 0;
    let mut out = Vec::new();
    while at + FRAME <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or([0; 4]));
        if len == 0 {
            return (out, at, None);
        }
        let Some(payload) = bytes.get(at + FRAME..at + FRAME + len) else {
            return (out, at, Some(format!("record at {at} runs past the file")));
        };
        if crc32fast::hash(payload) != crc {
            return (out, at, Some(format!("checksum mismatch at {at}")));
        }
        match serde_json::from_slice(payload) {
            Ok(r) => out.push(r),
            Err(e) => return (out, at, Some(format!("undecodable record at {at}: {e}"))),
        }
        at += FRAME + len;
    }
    (out, at, None)
}

/// Make what the page cache holds of `file` durable, then drop it from the
/// cache, so that what is read next is what the disk holds.
///
/// The sync: a killed process leaves written but unsynced records in the
/// page cache; they are read back as if durable, and a vote or an append
/// answer may be built on them, so they are made durable first. The drop:
/// after a failed `fdatasync` Linux may keep the failed pages in the cache
/// marked clean, and report the next sync (from a new process) as a
/// success; reading them from the cache would trust records that never
/// reached the disk. Read from the disk, they end the log where it really
/// ends.
fn trust_only_the_disk(file: &File) -> io::Result<()> {
    file.sync_all()?;
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Open (or create) the log in `dir`, handing every valid record to
    /// `replay` in order.
    pub fn open(dir: &Path, replay: impl FnMut(Record)) -> io::Result<Wal> {
        Wal::open_sized(dir, SEGMENT_BYTES, replay)
    }

    /// [`Wal::open`] with another segment size (tests use small ones).
    pub(crate) fn open_sized(
        dir: &Path,
        segment_bytes: u64,
        mut replay: impl FnMut(Record),
    ) -> io::Result<Wal> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".wal")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        let mut head = HeadState::default();
        let mut segments = Vec::new();
        let mut end = 0u64;
        for (i, seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(*seq));
            let mut bytes = Vec::new();
            let mut file = File::open(&path)?;
            trust_only_the_disk(&file)?;
            file.read_to_end(&mut bytes)?;
            let (records, valid, problem) = decode_all(&bytes);
            let newest = i + 1 == seqs.len();
            if let Some(p) = problem {
                if !newest {
                    return Err(corrupt(format!("{}: {p}", path.display())));
                }
                tracing::warn!(segment = %path.display(), problem = %p, "log ends in a torn write; discarding it");
            }
            let mut last_index = None;
            for r in records {
                if let Record::Entries(es) = &r {
                    last_index = es.last().map(|e| e.log_id.index).max(last_index);
                }
                head.observe(&r);
                replay(r);
            }
            segments.push(Segment {
                seq: *seq,
                path,
                last_index,
            });
            end = valid as u64;
        }
        let mut wal = match segments.last() {
            Some(last) => {
                let file = OpenOptions::new().read(true).write(true).open(&last.path)?;
                Wal {
                    dir: dir.to_path_buf(),
                    segments,
                    file,
                    offset: end,
                    head,
                    buf: Vec::new(),
                    segment_bytes,
                    failed: None,
                }
            }
            None => Wal::create(dir, 1, head, segment_bytes)?,
        };
        wal.wipe_tail()?;
        if wal.offset == 0 {
            // A crash inside `create` left the newest segment without its
            // header; write it before anything else lands there.
            let len = wal.file.metadata()?.len();
            if len < segment_bytes {
                wal.file.set_len(segment_bytes)?;
            }
            let header = wal.head.header();
            wal.append(&[header])?;
        }
        Ok(wal)
    }

    /// Start segment `seq` with a header and make both durable.
    fn create(dir: &Path, seq: u64, head: HeadState, segment_bytes: u64) -> io::Result<Wal> {
        let path = dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.set_len(segment_bytes)?;
        let mut buf = Vec::new();
        encode(&head.header(), &mut buf)?;
        file.write_all_at(&buf, 0)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            segments: vec![Segment {
                seq,
                path,
                last_index: None,
            }],
            file,
            offset: buf.len() as u64,
            head,
            buf: Vec::new(),
            segment_bytes,
            failed: None,
        })
    }

    /// Zero what a torn write may have left after the valid end, so a
    /// shorter record written there later is never followed by stale bytes.
    ///
    /// All the way to the end of the file: after a power loss any page of
    /// the torn batch may have reached the disk, and a batch can be tens of
    /// MiB (a follower catching up appends up to 16 MiB of entries at once).
    /// Only chunks with a non-zero byte are written; the rest of a segment
    /// is a sparse hole, which reads back as zeros without touching the
    /// disk.
    fn wipe_tail(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        let (mut at, mut chunk, mut wrote) = (self.offset, vec![0u8; WIPE_CHUNK], false);
        while at < len {
            let n = WIPE_CHUNK.min((len - at) as usize);
            self.file.read_exact_at(&mut chunk[..n], at)?;
            if chunk[..n].iter().any(|b| *b != 0) {
                chunk[..n].fill(0);
                self.file.write_all_at(&chunk[..n], at)?;
                wrote = true;
            }
            at += n as u64;
        }
        if wrote {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Fail with the first error if the log is poisoned.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(first) => Err(io::Error::other(format!(
                "the raft log failed earlier and accepts no writes: {first}"
            ))),
        }
    }

    /// Remember the first I/O error; every later write fails with it.
    fn poison<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        result
    }

    /// The first I/O error, if the log has failed.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Append `records` as one durable batch: one write, one `fdatasync`.
    /// The first error poisons the log (see the module docs).
    pub fn append(&mut self, records: &[Record]) -> io::Result<()> {
        self.check()?;
        let result = self.append_unchecked(records);
        self.poison(result)
    }

    fn append_unchecked(&mut self, records: &[Record]) -> io::Result<()> {
        self.buf.clear();
        for r in records {
            encode(r, &mut self.buf)?;
        }
        if self.offset + self.buf.len() as u64 > self.segment_bytes {
            self.rotate()?;
        }
        self.file.write_all_at(&self.buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += self.buf.len() as u64;
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| io::Error::other("log has no segment"))?;
        for r in records {
            if let Record::Entries(es) = r {
                seg.last_index = es.last().map(|e| e.log_id.index).max(seg.last_index);
            }
            self.head.observe(r);
        }
        Ok(())
    }

    /// Close the full segment and continue in a new one.
    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.segments.last().map(|s| s.seq + 1).unwrap_or(1);
        let next = Wal::create(&self.dir, seq, self.head, self.segment_bytes)?;
        self.segments.extend(next.segments);
        self.file = next.file;
        self.offset = next.offset;
        Ok(())
    }

    /// Delete the oldest segments whose every entry is at or below
    /// `purged` (never the one being written).
    pub fn drop_purged(&mut self, purged: u64) -> io::Result<()> {
        self.check()?;
        let result = self.drop_purged_unchecked(purged);
        self.poison(result)
    }

    fn drop_purged_unchecked(&mut self, purged: u64) -> io::Result<()> {
        let mut dropped = false;
        while self.segments.len() > 1 && self.segments[0].last_index.is_none_or(|i| i <= purged) {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path)?;
            dropped = true;
        }
        if dropped {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Number of segment files (for tests and stats).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::log_store::LogMem;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Record {
        Record::Entries(
            range
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        )
    }

    /// What the node rebuilds from a replay (the log store's own mirror).
    struct Seen(LogMem);

    impl Seen {
        fn indexes(&self) -> Vec<u64> {
            self.0.entries.keys().copied().collect()
        }
    }

    fn reopen(dir: &Path, segment_bytes: u64) -> (Wal, Seen) {
        let mut mem = LogMem::default();
        let wal = Wal::open_sized(dir, segment_bytes, |r| mem.replay(r)).unwrap();
        (wal, Seen(mem))
    }

    #[test]
    fn reopening_replays_every_kind_of_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert!(seen.indexes().is_empty() && seen.0.vote.is_none());
        wal.append(&[entries(1..=10), Record::Vote(Vote::new(2, 3))])
            .unwrap();
        wal.append(&[Record::Truncate(8), entries(8..=12)]).unwrap();
        wal.append(&[Record::Purge(log_id(4)), Record::Committed(Some(log_id(9)))])
            .unwrap();
        drop(wal);
        let (_, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert_eq!(seen.indexes(), (5..=12).collect::<Vec<_>>());
        assert_eq!(seen.0.vote, Some(Vote::new(2, 3)));
        assert_eq!(seen.0.committed, Some(log_id(9)));
        assert_eq!(seen.0.last_purged, Some(log_id(4)));
    }

    #[test]
    fn a_torn_tail_is_discarded_and_writing_resumes_after_the_valid_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), SEGMENT_BYTES);
        wal.append(&[entries(1..=3)]).unwrap();
        let end = wal.offset;
        // A crash halfway through the next batch: a frame that promises more
        // bytes than were written, and half of a payload.
        let mut torn = Vec::new();
        encode(&entries(4..=6), &mut torn).unwrap();
        torn.truncate(torn.len() / 2);
        wal.file.write_all_at(&torn, end).unwrap();
        drop(wal);

        let (mut wal, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert_eq!(seen.indexes(), (1..=3).collect::<Vec<_>>());
        assert_eq!(wal.offset, end, "writing resumes where the valid log ends");
        wal.append(&[entries(4..=4)]).unwrap();
        drop(wal);
        let (_, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert_eq!(
            seen.indexes(),
            (1..=4).collect::<Vec<_>>(),
            "no stale bytes after the new record"
        );
    }

    #[test]
    fn every_stale_byte_past_the_valid_end_is_zeroed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), SEGMENT_BYTES);
        wal.append(&[entries(1..=3)]).unwrap();
        let end = wal.offset;
        // Pages of a large torn batch that reached the disk far past its
        // start, as after a power loss (the frame at `end` never did).
        let far = end + (10 << 20);
        let mut stale = Vec::new();
        encode(&entries(4..=6), &mut stale).unwrap();
        wal.file.write_all_at(&stale, far).unwrap();
        drop(wal);
        let (wal, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert_eq!(seen.indexes(), (1..=3).collect::<Vec<_>>());
        let mut back = vec![0xffu8; stale.len()];
        wal.file.read_exact_at(&mut back, far).unwrap();
        assert!(back.iter().all(|b| *b == 0), "stale record left at {far}");
    }

    #[test]
    fn a_segment_left_empty_by_a_crash_gets_its_header_before_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), 2048);
        wal.append(&[Record::Vote(Vote::new(3, 1))]).unwrap();
        for i in 0..10 {
            wal.append(&[entries(i * 5 + 1..=i * 5 + 5)]).unwrap();
        }
        let seq = wal.segments.last().unwrap().seq + 1;
        drop(wal);
        // The crash: the next segment exists, but nothing was written to it.
        std::fs::File::create(dir.path().join(segment_name(seq))).unwrap();
        let (mut wal, seen) = reopen(dir.path(), 2048);
        assert_eq!(seen.indexes(), (1..=50).collect::<Vec<_>>());
        wal.append(&[Record::Purge(log_id(50))]).unwrap();
        wal.drop_purged(50).unwrap();
        assert_eq!(wal.segment_count(), 1, "only the repaired segment is left");
        drop(wal);
        let (_, seen) = reopen(dir.path(), 2048);
        assert_eq!(
            seen.0.vote,
            Some(Vote::new(3, 1)),
            "its header kept the vote"
        );
        assert_eq!(seen.0.last_purged, Some(log_id(50)));
    }

    #[test]
    fn the_first_failed_write_poisons_the_log_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), SEGMENT_BYTES);
        wal.append(&[entries(1..=2)]).unwrap();
        let path = wal.segments.last().unwrap().path.clone();
        // A handle that cannot write: the next batch fails as a disk would.
        let writable = std::mem::replace(&mut wal.file, File::open(&path).unwrap());
        assert!(wal.append(&[entries(3..=3)]).is_err());
        // The disk is fine again, but the failed batch's fate is unknown:
        // nothing may be written, or reported durable, after it.
        wal.file = writable;
        let err = wal.append(&[entries(3..=3)]).unwrap_err();
        assert!(err.to_string().contains("failed earlier"), "{err}");
        assert!(wal.drop_purged(1).is_err());
        assert!(wal.failure().is_some());
        drop(wal);
        let (_, seen) = reopen(dir.path(), SEGMENT_BYTES);
        assert_eq!(seen.indexes(), vec![1, 2]);
    }

    #[test]
    fn a_flipped_byte_in_an_older_segment_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), 2048);
        for i in 0..20 {
            wal.append(&[entries(i * 5 + 1..=i * 5 + 5)]).unwrap();
        }
        assert!(wal.segment_count() > 2);
        let first = wal.segments[0].path.clone();
        drop(wal);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[FRAME + 2] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let err = Wal::open_sized(dir.path(), 2048, |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn segments_rotate_and_fully_purged_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = reopen(dir.path(), 2048);
        wal.append(&[Record::Vote(Vote::new(7, 2))]).unwrap();
        for i in 0..40 {
            wal.append(&[entries(i * 5 + 1..=i * 5 + 5)]).unwrap();
        }
        let before = wal.segment_count();
        assert!(before > 3, "{before} segments");
        wal.append(&[Record::Purge(log_id(150))]).unwrap();
        wal.drop_purged(150).unwrap();
        let after = wal.segment_count();
        assert!(after < before, "{after} of {before} segments left");
        // Every remaining segment still holds an entry above the purge point,
        // except the one being written.
        for seg in &wal.segments[..after - 1] {
            assert!(seg.last_index.unwrap() > 150);
        }
        drop(wal);
        // The vote lived in a deleted segment; the headers carried it over.
        let (_, seen) = reopen(dir.path(), 2048);
        assert_eq!(seen.0.vote, Some(Vote::new(7, 2)));
        assert_eq!(seen.0.last_purged, Some(log_id(150)));
        assert_eq!(seen.indexes(), (151..=200).collect::<Vec<_>>());
    }
}
