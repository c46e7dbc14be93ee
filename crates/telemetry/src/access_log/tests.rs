use std::sync::mpsc;

use super::*;

/// A writer that collects what it is given; optionally it announces each write and
/// waits for a go-ahead first, so a test can hold the writer thread mid-batch.
#[derive(Clone, Default)]
struct Sink {
    written: Arc<Mutex<Vec<u8>>>,
}

struct GatedSink {
    sink: Sink,
    started: mpsc::Sender<()>,
    proceed: mpsc::Receiver<()>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for GatedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.started.send(());
        let _ = self.proceed.recv();
        self.sink.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn lines_are_written_whole_in_order_and_flushed() {
    let sink = Sink::default();
    let log = AccessLog::spawn(sink.clone(), 1024, Counter::default()).unwrap();
    for i in 0..100 {
        log.log(|line| {
            line.push_str("\"n\":");
            line.push_str(&i.to_string());
            line.push('}');
        });
    }
    log.stop(Duration::from_secs(5));
    let text = sink.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100, "{text}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with("{\"timestamp\":\""), "{line}");
        assert!(line.ends_with(&format!(",\"n\":{i}}}")), "{line}");
    }
    // After the stop, lines are dropped (and counted), not queued forever.
    log.log(|line| line.push('}'));
    assert_eq!(log.shared.dropped.get(), 1);
}

#[test]
fn a_full_queue_drops_lines_and_counts_them() {
    let sink = Sink::default();
    let (started, on_start) = mpsc::channel();
    let (go, proceed) = mpsc::channel();
    let dropped = Counter::default();
    let gated = GatedSink {
        sink: sink.clone(),
        started,
        proceed,
    };
    let log = AccessLog::spawn(gated, 2, dropped.clone()).unwrap();
    let line = |n: u32| {
        move |out: &mut String| {
            out.push_str("\"n\":");
            out.push_str(&n.to_string());
            out.push('}');
        }
    };
    // The writer takes line 0 and is held in its write.
    log.log(line(0));
    on_start.recv().unwrap();
    // Two lines fit in the queue; the next two do not and are not waited for.
    for n in 1..=4 {
        log.log(line(n));
    }
    assert_eq!(dropped.get(), 2);
    // Let every write through.
    for _ in 0..2 {
        go.send(()).unwrap();
    }
    drop(go);
    log.stop(Duration::from_secs(5));
    let text = sink.text();
    let kept: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(kept, ["\"n\":0}", "\"n\":1}", "\"n\":2}"], "{text}");
}

#[test]
fn the_timestamp_is_tracings() {
    let sink = Sink::default();
    let log = AccessLog::spawn(sink.clone(), 8, Counter::default()).unwrap();
    log.log(|line| line.push_str("\"level\":\"INFO\"}"));
    log.stop(Duration::from_secs(5));
    let text = sink.text();
    let stamp = text
        .strip_prefix("{\"timestamp\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    // 2026-11-30T03:56:20.123456Z
    assert_eq!(stamp.len(), 27, "{stamp}");
    assert_eq!(&stamp[10..11], "T");
    assert!(stamp.ends_with('Z'));
}

#[test]
fn the_timestamp_is_written_as_tracings_timer_writes_it() {
    use tracing_subscriber::fmt::{format::Writer, time::FormatTime};
    // Both read the clock, so take the pair again if a second turned between them.
    for _ in 0..100 {
        let mut tracing = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut tracing))
            .unwrap();
        let mut ours = String::new();
        super::push_timestamp(&mut ours);
        if ours[..19] == tracing[..19] {
            assert_eq!(ours.len(), tracing.len(), "{ours} {tracing}");
            assert!(ours >= tracing, "{ours} {tracing}");
            assert_eq!(ours.as_bytes()[19], b'.');
            assert!(ours.ends_with('Z') && ours[20..26].bytes().all(|b| b.is_ascii_digit()));
            return;
        }
    }
    panic!("the two clocks never agreed to the second");
}
