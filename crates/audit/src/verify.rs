//! Verifying the chain: every finding names the segment, the line and the seq.

use std::{
    collections::{HashMap, HashSet},
    fmt, fs,
    path::Path,
};

use serde_json::Value;

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
    checkpoint: Option<SignedCheckpoint>,
}

/// [`verify`], and then, with the signer's `public_key` (raw Ed25519, Base64): every
/// checkpoint in the trail is validly signed and names a line that is still there with
/// that hash; and every checkpoint in `external` (collected from the logs) is validly
/// signed and still matched by the trail. A signed head the trail no longer holds means
/// the tail was cut off or rewritten.
pub fn verify_signed(
    dir: &Path,
    public_key: &str,
    external: &[SignedCheckpoint],
) -> std::io::Result<Report> {
    let (mut report, lines) = read(dir)?;
    let by_seq: HashMap<u64, &Link> = lines.iter().map(|l| (l.seq, l)).collect();
    let last_seq = lines.iter().map(|l| l.seq).max().unwrap_or(0);
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
            Some(target) if target.hash == cp.head => {}
            Some(_) => find(format!(
                "{source} for seq {}: the line at seq {} is not the one that was signed (rewritten)",
                cp.seq, cp.seq
            )),
            None if cp.seq > last_seq => find(format!(
                "{source} for seq {}: the trail ends at seq {last_seq}; records after it were truncated",
                cp.seq
            )),
            None => find(format!(
                "{source} for seq {}: that record is missing",
                cp.seq
            )),
        }
    }
    Ok(report)
}

/// Reads every segment in `dir` and checks the chain: segments numbered without gaps,
/// each starting with its header; every line a JSON object with `seq` and `prev`; seqs
/// consecutive; each `prev` the hash of the line before. Edited, removed, reordered and
/// inserted lines, torn lines and missing segments are reported where they are.
///
/// A chain alone cannot show that its tail was cut off or rewritten consistently by
/// someone who recomputed every hash: signed checkpoints kept elsewhere do that.
pub fn verify(dir: &Path) -> std::io::Result<Report> {
    read(dir).map(|(report, _)| report)
}

fn read(dir: &Path) -> std::io::Result<(Report, Vec<Link>)> {
    let mut report = Report::default();
    let mut lines = Vec::new();
    let numbers = segments(dir)?;
    let mut expected_segment = numbers.first().copied().unwrap_or(1);
    for &number in &numbers {
        report.segments += 1;
        if number != expected_segment {
            report.findings.push(Finding {
                segment: number,
                line: 0,
                problem: format!(
                    "segments {expected_segment}..{} are missing",
                    number.saturating_sub(1)
                ),
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
        let mut first = true;
        for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            if raw.is_empty() {
                continue;
            }
            let at = |problem: String| Finding {
                segment: number,
                line: index + 1,
                problem,
            };
            let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(raw) else {
                report
                    .findings
                    .push(at("not a JSON object: edited or corrupted".into()));
                continue;
            };
            let (Some(seq), Some(prev)) = (
                object.get("seq").and_then(Value::as_u64),
                object.get("prev").and_then(Value::as_str),
            ) else {
                report
                    .findings
                    .push(at("no seq or prev: not a chain record".into()));
                continue;
            };
            if first {
                let header = object.get("kind").and_then(Value::as_str) == Some("segment")
                    && object.get("segment").and_then(Value::as_u64) == Some(number);
                if !header {
                    report.findings.push(at(format!(
                        "seq {seq}: the segment does not start with its own header (segment {number})"
                    )));
                }
                first = false;
            }
            report.records += 1;
            lines.push(Link {
                segment: number,
                line: index + 1,
                seq,
                prev: prev.to_owned(),
                hash: line_hash(raw),
                checkpoint: checkpoint_of(&object),
            });
        }
    }
    check_links(&lines, &mut report.findings);
    Ok((report, lines))
}

fn checkpoint_of(object: &serde_json::Map<String, Value>) -> Option<SignedCheckpoint> {
    if object.get("kind").and_then(Value::as_str) != Some("checkpoint") {
        return None;
    }
    let number = |key: &str| object.get(key).and_then(Value::as_u64);
    let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(SignedCheckpoint {
        checkpoint: Checkpoint {
            segment: number("covers_segment")?,
            seq: number("covers_seq")?,
            head: text("head")?,
            time_ms: number("time_ms")?,
        },
        signature: text("sig")?,
    })
}

fn check_links(lines: &[Link], findings: &mut Vec<Finding>) {
    let present: HashSet<u64> = lines.iter().map(|l| l.seq).collect();
    let mut seen = HashSet::new();
    let mut highest = 0;
    for (index, line) in lines.iter().enumerate() {
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
        let before = index.checked_sub(1).map(|i| &lines[i]);
        match before {
            None => {
                if line.seq != 1 || line.prev != GENESIS {
                    findings.push(at(format!(
                        "seq {}: the trail does not start at the beginning (seq 1 linked to genesis); earlier records are missing",
                        line.seq
                    )));
                }
            }
            Some(before) if line.seq == before.seq + 1 => {
                if line.prev != before.hash {
                    findings.push(Finding {
                        segment: before.segment,
                        line: before.line,
                        problem: format!(
                            "seq {} was edited: its bytes no longer hash to the prev that seq {} recorded",
                            before.seq, line.seq
                        ),
                    });
                }
            }
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
                    findings.push(at(format!(
                        "seq {first}..{last} removed ({} record(s) before seq {})",
                        missing.len(),
                        line.seq
                    )));
                }
            }
        }
        highest = highest.max(line.seq);
    }
}
