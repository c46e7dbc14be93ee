use std::path::Path;

use serde_json::{Map, Value, json};

use super::*;

fn record(n: u64) -> Map<String, Value> {
    match json!({"kind": "request", "action": "POST /transactionmanagement/create-transaction", "n": n})
    {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

/// A trail of two segments: header + 5 records, header + 5 records.
fn trail(dir: &Path) {
    let mut writer = ChainWriter::open(dir).unwrap();
    for n in 0..5 {
        writer.append(&record(n)).unwrap();
    }
    writer.rotate().unwrap();
    for n in 5..10 {
        writer.append(&record(n)).unwrap();
    }
    writer.sync().unwrap();
}

fn lines(dir: &Path, segment: u64) -> Vec<String> {
    std::fs::read_to_string(segment_path(dir, segment))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, segment: u64, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(segment_path(dir, segment), text).unwrap();
}

fn problems(dir: &Path) -> Vec<String> {
    verify(dir)
        .unwrap()
        .findings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn an_untouched_trail_verifies_across_segments_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    // Reopening continues the same chain.
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    assert_eq!(writer.segment(), 2);
    assert_eq!(writer.append(&record(10)).unwrap(), 13);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    assert_eq!((report.segments, report.records), (2, 13));
}

#[test]
fn the_chain_owns_seq_and_prev() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    let mut forged = record(0);
    forged.insert("seq".into(), 1.into());
    assert!(matches!(
        writer.append(&forged),
        Err(ChainError::ReservedField("seq"))
    ));
}

#[test]
fn an_edited_byte_is_named_by_segment_line_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let mut seg = lines(dir.path(), 1);
    seg[2] = seg[2].replace("\"n\":1", "\"n\":7");
    write_lines(dir.path(), 1, &seg);
    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("segment 1 line 3: seq 3 was edited"),
        "{found:?}"
    );
}

#[test]
fn a_deleted_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let mut seg = lines(dir.path(), 2);
    seg.remove(2);
    write_lines(dir.path(), 2, &seg);
    let found = problems(dir.path());
    assert_eq!(
        found,
        ["segment 2 line 3: seq 9..9 removed (1 record(s) before seq 10)"]
    );
}

#[test]
fn swapped_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let mut seg = lines(dir.path(), 1);
    seg.swap(2, 3);
    write_lines(dir.path(), 1, &seg);
    let found = problems(dir.path());
    assert!(
        found.iter().any(|f| f.contains("seq 3 is out of order")),
        "{found:?}"
    );
}

#[test]
fn an_inserted_forged_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let mut seg = lines(dir.path(), 1);
    let forged = seg[3].replace("\"n\":2", "\"n\":99");
    seg.insert(4, forged);
    write_lines(dir.path(), 1, &seg);
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("segment 1 line 5: seq 4 appears twice")),
        "{found:?}"
    );
}

#[test]
fn a_dropped_segment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    writer.rotate().unwrap();
    writer.append(&record(11)).unwrap();
    std::fs::remove_file(segment_path(dir.path(), 2)).unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("segment 3: segments 2..2 are missing")),
        "{found:?}"
    );
    // Dropping the first segment is seen too: the trail no longer starts at genesis.
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|f| f.contains("does not start at the beginning")),
        "{found:?}"
    );
}

#[test]
fn a_torn_last_line_is_reported_then_sealed_with_a_recovery_record() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    let path = segment_path(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let torn = b"{\"seq\":12,\"prev\":\"ab";
    bytes.extend_from_slice(torn);
    std::fs::write(&path, &bytes).unwrap();
    let found = problems(dir.path());
    assert!(found.iter().any(|f| f.contains("torn line")), "{found:?}");

    let writer = ChainWriter::open(dir.path()).unwrap();
    drop(writer);
    let report = verify(dir.path()).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    let last = lines(dir.path(), 2).pop().unwrap();
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["kind"], "recovery");
    assert_eq!(last["torn_bytes"], torn.len());
    assert_eq!(last["seq"], 13);
}

#[test]
fn a_segment_that_never_got_its_header_is_restarted_linked_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    trail(dir.path());
    // A crash right after creating segment 3, mid-way through its header.
    std::fs::write(segment_path(dir.path(), 3), b"{\"seq\":12,").unwrap();
    let mut writer = ChainWriter::open(dir.path()).unwrap();
    writer.append(&record(11)).unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    let seg = lines(dir.path(), 3);
    assert!(seg[0].contains("\"kind\":\"segment\""), "{seg:?}");
    assert!(seg[1].contains("\"kind\":\"recovery\""), "{seg:?}");
}
