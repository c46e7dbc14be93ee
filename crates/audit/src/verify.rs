//! Verifying the chain: every finding names the segment, the line and the seq.

use std::{
    collections::{HashMap, HashSet},
    fmt, fs,
    path::Path,
};

use serde_json::{Map, Value};

use crate::{
    chain::{GENESIS, line_hash, segment_path, segments},
    checkpoint::{Checkpoint, verify_signature},
};

/// A checkpoint and its Base64 signature, as found in the trail or in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed head.
    pub checkpoint: Checkpoint,
    /// Base64 Ed25519 signature of [`Checkpoint::message`].
    pub signature: String,
}

/// One thing wrong with the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The segment it was found in.
    pub segment: u64,
    /// The 1-based line in that segment (0 when the finding is about a whole segment).
    pub line: usize,
    /// What is wrong, for a person.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "segment {}: {}", self.segment, self.problem)
        } else {
            write!(
                f,
                "segment {} line {}: {}",
                self.segment, self.line, self.problem
            )
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Segments read.
    pub segments: usize,
    /// Chain lines read.
    pub records: usize,
    /// Everything wrong; empty means the chain is intact.
    pub findings: Vec<Finding>,
    /// Where the chain that was checked begins: `(segment, seq)` of its first line,
    /// `(1, 1)` for a trail kept from its genesis.
    pub started_at: Option<(u64, u64)>,
    /// When earlier segments were deleted by retention: the seq of the `retention` record
    /// that accounts for the start, so the start is a recorded deletion, not a loss.
    pub anchored_by: Option<u64>,
}

impl Report {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

struct Link {
    segment: u64,
    line: usize,
    seq: u64,
    prev: String,
    hash: String,
    /// Whether this is its segment's header line.
    header: bool,
    checkpoint: Option<SignedCheckpoint>,
    retention: Option<FirstKept>,
}

/// What a `retention` record says was kept: the header the chain now starts from.
struct FirstKept {
    segment: u64,
    seq: u64,
    prev: String,
}

/// The chain as read, with what [`read`] already found.
struct Trail {
    report: Report,
    lines: Vec<Link>,
    /// The line of the retention record that accounts for a start after genesis.
    anchor: Option<usize>,
}

/// [`verify`], and then, with the signer's `public_key` (raw Ed25519, Base64): every
/// checkpoint in the trail is validly signed and names a line that is still there with
/// that hash; and every checkpoint in `external` (collected from the logs) is validly
/// signed and still matched by the trail. A signed head the trail no longer holds means
/// the tail was cut off or rewritten. A logged head older than the start of a trail
/// whose earlier segments were deleted by retention is not looked for.
///
/// When segments were deleted by retention, the `retention` record the start relies on
/// must itself be covered by a later, valid signed checkpoint: anyone who can write the
/// files can append a chain line, only the signer can vouch for it.
pub fn verify_signed(
    dir: &Path,
    public_key: &str,
    external: &[SignedCheckpoint],
) -> std::io::Result<Report> {
    let Trail {
        mut report,
        lines,
        anchor,
    } = read(dir)?;
    let by_seq: HashMap<u64, &Link> = lines.iter().map(|l| (l.seq, l)).collect();
    let last_seq = lines.iter().map(|l| l.seq).max().unwrap_or(0);
    // Heads before the start are in segments retention deleted: nothing to compare.
    let first_kept_seq = anchor.and(report.started_at).map(|(_, seq)| seq);
    let mut covered_to = None;
    let internal = lines
        .iter()
        .filter_map(|l| l.checkpoint.as_ref().map(|c| (Some(l), c)));
    let logged = external.iter().map(|c| (None, c));
    for (line, signed) in internal.chain(logged) {
        let (segment, at) = line.map_or((signed.checkpoint.segment, 0), |l| (l.segment, l.line));
        let mut find = |problem: String| {
            report.findings.push(Finding {
                segment,
                line: at,
                problem,
            });
        };
        let cp = &signed.checkpoint;
        let source = if line.is_some() {
            "checkpoint"
        } else {
            "logged checkpoint"
        };
        if !verify_signature(public_key, cp, &signed.signature) {
            find(format!(
                "{source} for seq {}: bad signature (forged, edited, or another key)",
                cp.seq
            ));
            continue;
        }
        match by_seq.get(&cp.seq) {
            Some(target) if target.hash == cp.head => {
                covered_to = covered_to.max(Some(cp.seq));
            }
            Some(target) => find(format!(
                "{source} for seq {}: the line at seq {} (segment {} line {}) is not the one that was signed (rewritten)",
                cp.seq, cp.seq, target.segment, target.line
            )),
            None if first_kept_seq.is_some_and(|first| cp.seq < first) => {}
            None if cp.seq > last_seq => find(format!(
                "{source} for seq {}: the trail ends at seq {last_seq}; records after it were truncated (the tail cut off, or an older copy of the segment put back)",
                cp.seq
            )),
            None => find(format!(
                "{source} for seq {}: that record is missing",
                cp.seq
            )),
        }
    }
    if let Some(line) = anchor.map(|index| &lines[index])
        && covered_to.is_none_or(|to| to < line.seq)
    {
        report.findings.push(Finding {
            segment: line.segment,
            line: line.line,
            problem: format!(
                "retention record at seq {} is not covered by a signed checkpoint: the deletion of the segments before it cannot be trusted",
                line.seq
            ),
        });
    }
    Ok(report)
}

/// Reads every segment in `dir` and checks the chain: segments numbered without gaps,
/// each starting with its header; every line a JSON object with `seq` and `prev`; seqs
/// consecutive; each `prev` the hash of the line before. Edited, removed, reordered and
/// inserted lines, torn lines, missing segments and copies of earlier segments put back
/// (replayed) are reported where they are.
///
/// A trail whose oldest segments were deleted by retention starts at the first kept
/// segment's header instead of genesis; that is intact only if a `retention` record in
/// the trail names that header (segment, seq and prev).
///
/// A chain alone cannot show that its tail was cut off or rewritten consistently by
/// someone who recomputed every hash: signed checkpoints kept elsewhere do that.
pub fn verify(dir: &Path) -> std::io::Result<Report> {
    read(dir).map(|trail| trail.report)
}

fn read(dir: &Path) -> std::io::Result<Trail> {
    let mut report = Report::default();
    let mut lines: Vec<Link> = Vec::new();
    let numbers = segments(dir)?;
    let mut expected_segment = numbers.first().copied().unwrap_or(1);
    for &number in &numbers {
        report.segments += 1;
        if number != expected_segment {
            let last_missing = number.saturating_sub(1);
            report.findings.push(Finding {
                segment: number,
                line: 0,
                problem: if last_missing == expected_segment {
                    format!("segment {expected_segment} is missing")
                } else {
                    format!("segments {expected_segment}..{last_missing} are missing")
                },
            });
        }
        expected_segment = number + 1;
        let bytes = fs::read(segment_path(dir, number))?;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let line = bytes.split(|b| *b == b'\n').count();
            report.findings.push(Finding {
                segment: number,
                line,
                problem: "torn line (no newline at its end): a write was cut short".into(),
            });
        }
        // The highest seq of the segments before: a segment starting at or below it is
        // an earlier one put back.
        let highest_before = lines.iter().map(|l| l.seq).max();
        let mut first = true;
        for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let after = lines
                .last()
                .map_or_else(String::new, |l| format!(" (the line after seq {})", l.seq));
            let at = |problem: String| Finding {
                segment: number,
                line: index + 1,
                problem,
            };
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
                report
                    .findings
                    .push(at(format!("not a JSON object{after}: edited or corrupted")));
                continue;
            };
            let (Some(seq), Some(prev)) = (
                object.get("seq").and_then(Value::as_u64),
                object.get("prev").and_then(Value::as_str),
            ) else {
                report
                    .findings
                    .push(at(format!("no seq or prev{after}: not a chain record")));
                continue;
            };
            report.records += 1;
            let header = object.get("kind").and_then(Value::as_str) == Some("segment");
            if first {
                first = false;
                let names = object.get("segment").and_then(Value::as_u64);
                if let Some(highest) = highest_before.filter(|highest| header && seq <= *highest) {
                    let holder = lines
                        .iter()
                        .rfind(|l| l.seq == seq)
                        .map_or(String::new(), |l| {
                            format!(", which segment {} already holds", l.segment)
                        });
                    let header_says = names
                        .filter(|named| *named != number)
                        .map_or(String::new(), |named| {
                            format!(" and its header names segment {named}")
                        });
                    report.findings.push(at(format!(
                        "seq {seq}: the segment starts at seq {seq}{holder}{header_says} (the trail had reached seq {highest}): a copy of an earlier segment was put back (replayed segment)"
                    )));
                    // Its lines are the old segment's; checking them again would only
                    // repeat that every one is a copy.
                    break;
                }
                if !header || names != Some(number) {
                    report.findings.push(at(format!(
                        "seq {seq}: the segment does not start with its own header (segment {number})"
                    )));
                }
            }
            lines.push(Link {
                segment: number,
                line: index + 1,
                seq,
                prev: prev.to_owned(),
                hash: line_hash(raw),
                header,
                checkpoint: checkpoint_of(&object),
                retention: retention_of(&object),
            });
        }
    }
    let anchor = check_start(&lines, &mut report);
    check_links(&lines, &mut report.findings);
    Ok(Trail {
        report,
        lines,
        anchor,
    })
}

/// Where the chain starts: at genesis, or at the first kept segment's header as a
/// retention record names it. Returns the index of that retention record's line.
fn check_start(lines: &[Link], report: &mut Report) -> Option<usize> {
    let first = lines.first()?;
    report.started_at = Some((first.segment, first.seq));
    if first.seq == 1 && first.prev == GENESIS {
        return None;
    }
    let retentions = || {
        lines
            .iter()
            .enumerate()
            .filter_map(|(index, l)| l.retention.as_ref().map(|r| (index, l, r)))
    };
    let anchor = retentions().find(|(_, _, r)| {
        first.header && r.segment == first.segment && r.seq == first.seq && r.prev == first.prev
    });
    if let Some((index, line, _)) = anchor {
        report.anchored_by = Some(line.seq);
        return Some(index);
    }
    let why = match retentions().next_back() {
        Some((_, line, r)) if r.segment == first.segment => format!(
            "the retention record at seq {} kept segment {} from seq {}, but this header is not the one it recorded (the segment was replaced)",
            line.seq, r.segment, r.seq
        ),
        Some((_, line, r)) if r.segment < first.segment => format!(
            "the retention record at seq {} kept segment {} on (seq {}); {} deleted without a record",
            line.seq,
            r.segment,
            r.seq,
            segment_range(r.segment, first.segment - 1)
        ),
        _ => format!(
            "{} gone and no retention record accounts for them",
            segment_range(1, first.segment.saturating_sub(1).max(1))
        ),
    };
    report.findings.push(Finding {
        segment: first.segment,
        line: first.line,
        problem: format!(
            "seq {}: the trail does not start at the beginning (seq 1 linked to genesis); earlier records are missing: {why}",
            first.seq
        ),
    });
    None
}

fn segment_range(from: u64, to: u64) -> String {
    if from >= to {
        format!("segment {from} was")
    } else {
        format!("segments {from}..{to} were")
    }
}

fn checkpoint_of(object: &Map<String, Value>) -> Option<SignedCheckpoint> {
    if object.get("kind").and_then(Value::as_str) != Some("checkpoint") {
        return None;
    }
    signed_checkpoint(
        object,
        ["covers_segment", "covers_seq", "head", "time_ms", "sig"],
    )
}

/// The checkpoint whose segment, seq, head, time and signature `object` holds under
/// `names` (in that order): the trail's checkpoint records and the log's checkpoint lines
/// carry the same five values under different names.
fn signed_checkpoint(
    object: &Map<String, Value>,
    [segment, seq, head, time_ms, signature]: [&str; 5],
) -> Option<SignedCheckpoint> {
    let number = |key: &str| object.get(key).and_then(Value::as_u64);
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(SignedCheckpoint {
        checkpoint: Checkpoint {
            segment: number(segment)?,
            seq: number(seq)?,
            head: text(head)?,
            time_ms: number(time_ms)?,
        },
        signature: text(signature)?,
    })
}

fn retention_of(object: &Map<String, Value>) -> Option<FirstKept> {
    if object.get("kind").and_then(Value::as_str) != Some("retention") {
        return None;
    }
    Some(FirstKept {
        segment: object.get("first_kept_segment")?.as_u64()?,
        seq: object.get("first_kept_seq")?.as_u64()?,
        prev: object.get("first_kept_prev")?.as_str()?.to_owned(),
    })
}

fn check_links(lines: &[Link], findings: &mut Vec<Finding>) {
    let present: HashSet<u64> = lines.iter().map(|l| l.seq).collect();
    let mut seen = HashSet::new();
    let mut highest = 0;
    // The line before, skipping copies: an inserted duplicate is named once, not again as
    // a broken link for the genuine line after it.
    let mut before: Option<&Link> = None;
    for line in lines {
        let at = |problem: String| Finding {
            segment: line.segment,
            line: line.line,
            problem,
        };
        if !seen.insert(line.seq) {
            findings.push(at(format!(
                "seq {} appears twice: a line was inserted or copied",
                line.seq
            )));
            continue;
        }
        match before {
            // Where the chain starts is check_start's question.
            None => {}
            Some(before) if line.seq == before.seq + 1 && line.prev != before.hash => {
                findings.push(Finding {
                    segment: before.segment,
                    line: before.line,
                    problem: format!(
                        "seq {} was edited: its bytes no longer hash to the prev that seq {} recorded",
                        before.seq, line.seq
                    ),
                });
            }
            Some(before) if line.seq == before.seq + 1 => {}
            Some(_) if line.seq < highest => {
                findings.push(at(format!(
                    "seq {} is out of order (after seq {highest}): lines were reordered",
                    line.seq
                )));
            }
            Some(before) => {
                let missing: Vec<u64> = (before.seq + 1..line.seq)
                    .filter(|seq| !present.contains(seq))
                    .collect();
                if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
                    let segment_end = if !line.header || before.segment == line.segment {
                        String::new()
                    } else if before.segment + 1 == line.segment {
                        format!(
                            "; the end of segment {} is gone (cut short, or an older copy of it put back)",
                            before.segment
                        )
                    } else {
                        let (from, to) = (before.segment + 1, line.segment - 1);
                        let held = if from == to {
                            format!("segment {from}")
                        } else {
                            format!("segments {from}..{to}")
                        };
                        format!("; {held} held them (missing or replaced)")
                    };
                    findings.push(at(format!(
                        "seq {first}..{last} removed ({} record(s) before seq {}){segment_end}",
                        missing.len(),
                        line.seq
                    )));
                }
            }
        }
        before = Some(line);
        highest = highest.max(line.seq);
    }
}

/// The checkpoints the sidecar logged, from a log file's text: one JSON line per
/// checkpoint, `"message":"audit checkpoint"` with `segment`, `seq`, `head`, `time_ms` and
/// `signature` (flattened, or under `fields`). A prefix before the first `{` (container
/// runtimes write `2026-11-29T20:00:00Z stdout F {...}`) is skipped; every other line,
/// malformed ones included, is ignored: a log holds far more than checkpoints.
pub fn checkpoints_from_log(text: &str) -> Vec<SignedCheckpoint> {
    text.lines().filter_map(checkpoint_from_log_line).collect()
}

/// [`checkpoints_from_log`] for one line, for reading a large log line by line.
pub fn checkpoint_from_log_line(line: &str) -> Option<SignedCheckpoint> {
    let json = &line[line.find('{')?..];
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(json.trim_end()) else {
        return None;
    };
    // tracing-subscriber flattens event fields to the top level when asked to, and
    // nests them under `fields` otherwise.
    let fields = match object.get("fields") {
        Some(Value::Object(fields)) if !object.contains_key("message") => fields,
        _ => &object,
    };
    if fields.get("message").and_then(Value::as_str) != Some("audit checkpoint") {
        return None;
    }
    signed_checkpoint(fields, ["segment", "seq", "head", "time_ms", "signature"])
}
