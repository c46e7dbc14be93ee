//! Writing the chain: segments, the `seq`/`prev` fields, torn-line recovery.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, Signer};

/// The `prev` of the very first line: no line came before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Segment files are `audit-00000001.jsonl`, `audit-00000002.jsonl`, ...
pub const SEGMENT_PREFIX: &str = "audit-";

const SEGMENT_SUFFIX: &str = ".jsonl";

/// Why the chain could not be opened or written. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The file system refused.
    #[error("audit trail {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The last full line of the trail is not a chain line, so the chain cannot be continued
    /// without hiding that; `audit verify` says what is wrong.
    #[error(
        "audit trail {path}: the last line is not a valid chain record ({why}); run `fincode-sidecar audit verify` on the directory"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// What was wrong.
        why: &'static str,
    },
    /// A record used a field the chain owns.
    #[error("an audit record may not set the chain's own field {0:?}")]
    ReservedField(&'static str),
}

/// The path of segment `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:08}{SEGMENT_SUFFIX}"))
}

/// The segment numbers present in `dir`, ascending.
pub(crate) fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers: Vec<u64> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            name.strip_prefix(SEGMENT_PREFIX)?
                .strip_suffix(SEGMENT_SUFFIX)?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The hex SHA-256 of a line's bytes, without its newline: what the next line's `prev` holds.
pub(crate) fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// The page size the cache is handed back in (4 KiB on every platform this runs on; a
/// larger real page only means part of the range is kept).
const PAGE: u64 = 4096;

/// Appends records to the chain. One writer per directory (the sidecar's audit task).
#[derive(Debug)]
pub struct ChainWriter {
    dir: PathBuf,
    segment: u64,
    file: File,
    next_seq: u64,
    prev: String,
    /// Bytes in the current segment, for rotation by size.
    size: u64,
    /// When the current segment was started (ms since the epoch), for rotation by age.
    started_ms: u64,
    /// Lines appended but not yet written: a batch is one `write`.
    buf: Vec<u8>,
    /// Where the segment's pages may still sit in the page cache: everything before was
    /// synced and handed back to the kernel (see [`Self::sync`]).
    cached_from: u64,
}

impl Drop for ChainWriter {
    fn drop(&mut self) {
        // Best effort: whoever needed these lines durable synced them already.
        let _ = self.flush();
    }
}

// === impl ChainWriter ===

impl ChainWriter {
    /// Opens the trail in `dir` (created if missing) to continue its chain. A torn last
    /// line (a crash mid-write) is cut off and a `recovery` record naming its length and
    /// hash is appended, so the loss stays on the record.
    pub fn open(dir: &Path) -> Result<Self, ChainError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ChainError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let numbers = segments(dir).map_err(io(dir))?;
        let Some(&last) = numbers.last() else {
            return Self::start(dir, 1, 1, GENESIS.to_owned());
        };
        let path = segment_path(dir, last);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        let full = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let torn = bytes.split_off(full);
        if !torn.is_empty() {
            // Append-mode writes always go to the end, so cut the torn bytes off first.
            file.set_len(full as u64).map_err(io(&path))?;
            file.seek(SeekFrom::End(0)).map_err(io(&path))?;
        }
        let Some(last_line) = bytes[..full.saturating_sub(1)]
            .rsplit(|b| *b == b'\n')
            .next()
            .filter(|line| !line.is_empty())
        else {
            // A segment that never got its header: link it to the segment before.
            drop(file);
            let (next_seq, prev) = Self::tail_of(dir, &numbers[..numbers.len() - 1])?;
            fs::remove_file(&path).map_err(io(&path))?;
            let mut writer = Self::start(dir, last, next_seq, prev)?;
            writer.recovered(&torn)?;
            writer.flush()?;
            return Ok(writer);
        };
        let seq = parse_seq(last_line).ok_or(ChainError::Corrupt {
            path: path.clone(),
            why: "no seq",
        })?;
        let started_ms = bytes
            .split(|b| *b == b'\n')
            .next()
            .and_then(header_time_ms)
            .or_else(|| {
                file.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .map(ms_since_epoch)
            })
            .unwrap_or_else(now_ms);
        let mut writer = Self {
            dir: dir.to_owned(),
            segment: last,
            file,
            buf: Vec::new(),
            next_seq: seq + 1,
            prev: line_hash(last_line),
            size: full as u64,
            started_ms,
            cached_from: 0,
        };
        writer.recovered(&torn)?;
        writer.flush()?;
        Ok(writer)
    }

    /// The next seq and `prev` after the last full line of the last of `numbers`.
    fn tail_of(dir: &Path, numbers: &[u64]) -> Result<(u64, String), ChainError> {
        let Some(&number) = numbers.last() else {
            return Ok((1, GENESIS.to_owned()));
        };
        let path = segment_path(dir, number);
        let bytes = fs::read(&path).map_err(|source| ChainError::Io {
            path: path.clone(),
            source,
        })?;
        let line = bytes
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .ok_or(ChainError::Corrupt {
                path: path.clone(),
                why: "an earlier segment is empty",
            })?;
        let seq = parse_seq(line).ok_or(ChainError::Corrupt {
            path,
            why: "no seq",
        })?;
        Ok((seq + 1, line_hash(line)))
    }

    fn start(dir: &Path, segment: u64, next_seq: u64, prev: String) -> Result<Self, ChainError> {
        let path = segment_path(dir, segment);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| ChainError::Io { path, source })?;
        let mut writer = Self {
            dir: dir.to_owned(),
            segment,
            file,
            buf: Vec::new(),
            next_seq,
            prev,
            size: 0,
            started_ms: now_ms(),
            cached_from: 0,
        };
        writer.write_header()?;
        // The header is on file at once: a new segment is never left without one.
        writer.flush()?;
        Ok(writer)
    }

    fn write_header(&mut self) -> Result<(), ChainError> {
        let mut header = Map::new();
        header.insert("kind".into(), "segment".into());
        header.insert("segment".into(), self.segment.into());
        header.insert("time_ms".into(), self.started_ms.into());
        self.append(&header).map(drop)
    }

    fn recovered(&mut self, torn: &[u8]) -> Result<(), ChainError> {
        if torn.is_empty() {
            return Ok(());
        }
        let mut record = Map::new();
        record.insert("kind".into(), "recovery".into());
        record.insert("torn_bytes".into(), torn.len().into());
        record.insert("torn_sha256".into(), line_hash(torn).into());
        self.append(&record).map(drop)
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Bytes written to the current segment so far.
    pub fn segment_size(&self) -> u64 {
        self.size
    }

    /// When the current segment was started, in ms since the Unix epoch (UTC): its
    /// header's `time_ms`, or for a segment written before headers carried it, the file's
    /// modification time. The writer rotates by age with it.
    pub fn segment_started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Deletes the oldest closed segments whose files were last modified before `cutoff`
    /// (`retention` is what the operator configured, recorded for the auditor). Only a
    /// contiguous run from the oldest segment goes, never the current one, so the trail
    /// keeps no hole: it is the same chain, started later.
    ///
    /// The deletion is itself on the record: before any file is removed, one `retention`
    /// record naming the deleted segments and the first kept segment's header (its `seq`
    /// and `prev`) is appended and synced, so `audit verify` can start from that header
    /// and still tell a recorded deletion from a removed segment. The caller signs a
    /// checkpoint right after, so the record cannot be forged without the key.
    ///
    /// Returns the deleted segment numbers; empty when nothing was old enough (and then
    /// nothing was written).
    pub fn apply_retention(
        &mut self,
        cutoff: SystemTime,
        retention: Duration,
    ) -> Result<Vec<u64>, ChainError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ChainError::Io { path, source }
        };
        let numbers = segments(&self.dir).map_err(io(&self.dir))?;
        let mut deleted = Vec::new();
        for &number in numbers.iter().filter(|n| **n < self.segment) {
            let path = segment_path(&self.dir, number);
            let modified = fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(io(&path))?;
            if modified >= cutoff {
                break;
            }
            deleted.push(number);
        }
        let Some(&last_deleted) = deleted.last() else {
            return Ok(deleted);
        };
        let first_kept = numbers
            .iter()
            .copied()
            .find(|n| *n > last_deleted)
            .unwrap_or(self.segment);
        let (first_kept_seq, first_kept_prev) = self.header_link(first_kept)?;
        let mut record = Map::new();
        record.insert("kind".into(), "retention".into());
        record.insert("time_ms".into(), now_ms().into());
        record.insert("retention_secs".into(), retention.as_secs().into());
        record.insert("deleted_segments".into(), deleted.clone().into());
        record.insert("first_kept_segment".into(), first_kept.into());
        record.insert("first_kept_seq".into(), first_kept_seq.into());
        record.insert("first_kept_prev".into(), first_kept_prev.into());
        self.append(&record)?;
        self.sync()?;
        for &number in &deleted {
            let path = segment_path(&self.dir, number);
            fs::remove_file(&path).map_err(io(&path))?;
        }
        // The removals themselves are durable only once the directory is synced.
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(&self.dir))?;
        Ok(deleted)
    }

    /// The `seq` and `prev` of segment `number`'s header (its first line).
    fn header_link(&self, number: u64) -> Result<(u64, String), ChainError> {
        let path = segment_path(&self.dir, number);
        let corrupt = |why| ChainError::Corrupt {
            path: path.clone(),
            why,
        };
        let mut first = Vec::new();
        File::open(&path)
            .map(BufReader::new)
            .and_then(|mut reader| reader.read_until(b'\n', &mut first))
            .map_err(|source| ChainError::Io {
                path: path.clone(),
                source,
            })?;
        let header: Value = serde_json::from_slice(first.trim_ascii_end())
            .map_err(|_| corrupt("the first kept segment's header is not JSON"))?;
        let seq = header.get("seq").and_then(Value::as_u64);
        let prev = header.get("prev").and_then(Value::as_str);
        match (seq, prev) {
            (Some(seq), Some(prev)) => Ok((seq, prev.to_owned())),
            _ => Err(corrupt(
                "the first kept segment's header has no seq or prev",
            )),
        }
    }

    /// Appends `record` as the next line; returns its seq. Written, not yet synced: call
    /// [`Self::sync`] once per batch (group commit).
    pub fn append(&mut self, record: &Map<String, Value>) -> Result<u64, ChainError> {
        Ok(self.append_fields(map_fields(record)?.as_bytes()))
    }

    /// Appends a record given as its JSON object's members without the braces
    /// (`"kind":"http","status":200`), as [`crate::Record`] builds it; returns its seq.
    /// The members must not include `seq` or `prev`. Buffered until [`Self::flush`] or
    /// [`Self::sync`], so a batch costs one `write`.
    pub fn append_fields(&mut self, fields: &[u8]) -> u64 {
        let seq = self.next_seq;
        // `seq` and `prev` first, then the record's fields: the line is what is hashed,
        // so it is built once here and never re-serialised.
        let start = self.buf.len();
        self.buf.extend_from_slice(b"{\"seq\":");
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        self.buf.extend_from_slice(b",\"prev\":\"");
        self.buf.extend_from_slice(self.prev.as_bytes());
        self.buf.push(b'"');
        if !fields.is_empty() {
            self.buf.push(b',');
            self.buf.extend_from_slice(fields);
        }
        self.buf.push(b'}');
        // The new `prev`, written over the old one's allocation.
        let digest = Sha256::digest(&self.buf[start..]);
        let mut digits = [0_u8; 64];
        // 32 bytes fill 64 digits exactly; hex digits are ASCII.
        let _ = hex::encode_to_slice(digest, &mut digits);
        self.prev.clear();
        self.prev
            .push_str(std::str::from_utf8(&digits).unwrap_or_default());
        self.buf.push(b'\n');
        self.next_seq = seq + 1;
        self.size += (self.buf.len() - start) as u64;
        seq
    }

    /// Writes what was appended to the file (one `write`), without forcing it to disk.
    pub fn flush(&mut self) -> Result<(), ChainError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buf);
        self.buf.clear();
        written.map_err(|source| ChainError::Io {
            path: segment_path(&self.dir, self.segment),
            source,
        })
    }

    /// Signs the chain's head with `signer` and appends the checkpoint as the next line;
    /// returns the checkpoint and its Base64 signature, for the caller to also write to the
    /// log (an independent copy: deleting the files' tail cannot hide a logged head).
    pub fn checkpoint(
        &mut self,
        signer: &Signer,
        time_ms: u64,
    ) -> Result<(Checkpoint, String), ChainError> {
        let checkpoint = Checkpoint {
            segment: self.segment,
            seq: self.next_seq - 1,
            head: self.prev.clone(),
            time_ms,
        };
        let signature = signer.sign(&checkpoint);
        let mut record = Map::new();
        record.insert("kind".into(), "checkpoint".into());
        record.insert("covers_segment".into(), checkpoint.segment.into());
        record.insert("covers_seq".into(), checkpoint.seq.into());
        record.insert("head".into(), checkpoint.head.clone().into());
        record.insert("time_ms".into(), checkpoint.time_ms.into());
        record.insert("sig".into(), signature.clone().into());
        self.append(&record)?;
        Ok((checkpoint, signature))
    }

    /// Writes what was appended and forces it to the disk (fsync), then hands the synced
    /// whole pages back to the kernel.
    ///
    /// The trail is written once and read only by `audit verify`/`find`, yet every byte of
    /// it would otherwise stay in the page cache until memory runs short. That cache is
    /// charged to the pod's memory cgroup, so gigabytes of trail would push the sidecar
    /// towards its memory limit and into reclaim, work billed to whichever of its threads
    /// allocates next. Synced pages are clean, so `POSIX_FADV_DONTNEED` drops them at once.
    /// The last partial page stays: the next write appends to it.
    pub fn sync(&mut self) -> Result<(), ChainError> {
        self.flush()?;
        self.file.sync_data().map_err(|source| ChainError::Io {
            path: segment_path(&self.dir, self.segment),
            source,
        })?;
        let synced_pages_end = self.size & !(PAGE - 1);
        if synced_pages_end > self.cached_from {
            // Advice only: a kernel that ignores it costs memory, not correctness.
            let _ = rustix::fs::fadvise(
                &self.file,
                self.cached_from,
                std::num::NonZeroU64::new(synced_pages_end - self.cached_from),
                rustix::fs::Advice::DontNeed,
            );
            self.cached_from = synced_pages_end;
        }
        Ok(())
    }

    /// Closes the current segment and starts the next; its header links to this one's
    /// last line.
    pub fn rotate(&mut self) -> Result<(), ChainError> {
        self.sync()?;
        let next = Self::start(
            &self.dir,
            self.segment + 1,
            self.next_seq,
            self.prev.clone(),
        )?;
        *self = next;
        Ok(())
    }
}

/// `record`'s members without the braces, as [`ChainWriter::append_fields`] takes them;
/// a record may not set the chain's own `seq` or `prev`.
pub(crate) fn map_fields(record: &Map<String, Value>) -> Result<String, ChainError> {
    for reserved in ["seq", "prev"] {
        if record.contains_key(reserved) {
            return Err(ChainError::ReservedField(reserved));
        }
    }
    let mut fields = String::new();
    for (key, value) in record {
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str(&Value::from(key.as_str()).to_string());
        fields.push(':');
        fields.push_str(&value.to_string());
    }
    Ok(fields)
}

/// The `time_ms` of a segment header line, if it has one.
fn header_time_ms(line: &[u8]) -> Option<u64> {
    let header: Value = serde_json::from_slice(line).ok()?;
    if header.get("kind")?.as_str()? != "segment" {
        return None;
    }
    header.get("time_ms")?.as_u64()
}

pub(crate) fn ms_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn now_ms() -> u64 {
    ms_since_epoch(SystemTime::now())
}

/// The `seq` of a chain line, if it has one.
pub(crate) fn parse_seq(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(line)
        .ok()?
        .get("seq")?
        .as_u64()
}
