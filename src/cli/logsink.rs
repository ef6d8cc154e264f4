//! A non-blocking log writer: events are formatted on the request's thread
//! and handed to one background thread that writes them in batches, so the
//! hot path never waits on a write syscall to stderr (journald under
//! systemd), and it wakes at most every 2 ms under load. The channel is bounded and sending blocks when it is full:
//! under overload logging slows requests down rather than dropping audit
//! records.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::OnceLock;

use tracing_subscriber::fmt::MakeWriter;

/// Records buffered between the request threads and the writer thread.
const CAPACITY: usize = 64 * 1024;

/// What the writer thread receives.
enum Msg {
    Line(Vec<u8>),
    /// Write everything received so far, then acknowledge.
    Flush(SyncSender<()>),
}

/// Hands formatted events to the writer thread.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Msg>,
}

/// Flushes everything written so far when dropped; keep it alive until
/// the process exits. (The global subscriber keeps a sender forever, so
/// the guard asks for a flush instead of waiting for the thread to end.)
pub struct LogGuard {
    tx: SyncSender<Msg>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// A sink writing to stderr from a background thread.
pub fn stderr() -> (LogSink, LogGuard) {
    let (tx, rx) = sync_channel::<Msg>(CAPACITY);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(rx, io::stderr()))
        .expect("the log writer thread starts");
    (LogSink { tx: tx.clone() }, LogGuard { tx })
}

fn write_loop<W: Write>(rx: Receiver<Msg>, out: W) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    let handle = |m: Msg, out: &mut io::BufWriter<W>| match m {
        Msg::Line(l) => {
            let _ = out.write_all(&l);
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    while let Ok(first) = rx.recv() {
        handle(first, &mut out);
        while let Ok(next) = rx.try_recv() {
            handle(next, &mut out);
        }
        let _ = out.flush();
        // Let records accumulate: a sender only wakes the thread (a futex
        // syscall) when it is blocked in recv, so under load this turns a
        // wake-up per record into one per batch. Costs at most 2 ms latency.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = out.flush();
}

/// The sink that JSON-format lines may be sent to directly, bypassing the
/// tracing formatter (the audit record formats its own line: see
/// `audit::Record::log`). Set once by `init_logging` for `--log-format json`.
static JSON_DIRECT: OnceLock<LogSink> = OnceLock::new();

/// Lets pre-formatted JSON lines go to `sink` (the JSON log format is on).
pub(crate) fn route_json_lines(sink: &LogSink) {
    let _ = JSON_DIRECT.set(sink.clone());
}

/// The sink for pre-formatted JSON lines, when the log format is JSON.
pub(crate) fn json_direct() -> Option<&'static LogSink> {
    JSON_DIRECT.get()
}

impl LogSink {
    /// Queues one complete line (newline included) for the writer thread,
    /// in order with the lines the tracing formatter hands over.
    pub(crate) fn send_line(&self, line: Vec<u8>) {
        let _ = self.tx.send(Msg::Line(line));
    }
}

/// One event's bytes; sent when the event is complete (on drop).
pub struct EventWriter {
    buf: Vec<u8>,
    tx: SyncSender<Msg>,
}

impl Write for EventWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.tx.send(Msg::Line(std::mem::take(&mut self.buf)));
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            buf: Vec::with_capacity(256),
            tx: self.tx.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_in_order_before_the_guard_drops() {
        let (tx, rx) = sync_channel::<Msg>(4);
        let (out_tx, out_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Collect(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Collect {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let t = std::thread::spawn(move || write_loop(rx, Collect(out_tx)));
        let sink = LogSink { tx: tx.clone() };
        for i in 0..100 {
            let mut w = sink.make_writer();
            writeln!(w, "line {i}").unwrap();
        }
        // The guard returns once everything is written, although a sender
        // (the global subscriber's) is still alive.
        drop(LogGuard { tx });
        let flushed: Vec<u8> = out_rx.try_iter().flatten().collect();
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(String::from_utf8(flushed).unwrap(), expected);
        drop(sink);
        t.join().unwrap();
        assert!(out_rx.try_iter().next().is_none());
    }
}
