use super::*;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn refusal_frames_in_order() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    write_refusal(&mut a, "gateway: denied\nsecond line", true)
        .await
        .unwrap();
    drop(a);
    let mut frames = Vec::new();
    while let Some(f) = ws::read_frame(&mut b, 4096).await.unwrap() {
        frames.push(f);
    }
    assert_eq!(
        frames[0],
        Frame::text("ERROR: gateway: denied second line\n")
    );
    assert_eq!(frames[1], Frame::text(format!("{EXIT_MARKER}:1\n")));
    assert_eq!(frames[2], Frame::binary(Vec::new()));
    assert_eq!(frames[3].opcode, Opcode::Close);
    assert_eq!(frames.len(), 4);
}

type Peer = tokio::io::DuplexStream;

/// Starts a websocket splice between two duplex pipes; returns the
/// client's and the rack's far ends and a trigger for `stop`.
fn start(
    framing: Framing,
    idle: Duration,
    max: Duration,
) -> (
    tokio::task::JoinHandle<SpliceEnd>,
    Peer,
    Peer,
    tokio::sync::oneshot::Sender<()>,
) {
    let (c1, c2) = tokio::io::duplex(4096);
    let (r1, r2) = tokio::io::duplex(4096);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(splice(c1, r1, framing, idle, max, stop));
    (task, c2, r2, tx)
}

fn start_ws() -> (
    tokio::task::JoinHandle<SpliceEnd>,
    Peer,
    Peer,
    tokio::sync::oneshot::Sender<()>,
) {
    start(
        Framing::Websocket,
        Duration::from_secs(3600),
        Duration::from_secs(36_000),
    )
}

async fn read_n(r: &mut Peer, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).await.unwrap();
    buf
}

/// True if nothing arrives for a (virtual) second.
async fn silent(r: &mut Peer) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(1), r.read(&mut byte))
        .await
        .is_err()
}

/// Reads one close frame, checking its mask bit on the wire.
async fn read_close(r: &mut Peer, masked: bool) -> Frame {
    let head = read_n(r, 2).await;
    assert_eq!(head[0], 0x88, "a final close frame: {head:?}");
    assert_eq!(head[1] & 0x80 != 0, masked, "mask bit: {head:?}");
    let len = usize::from(head[1] & 0x7f) + if masked { 4 } else { 0 };
    let mut raw = head;
    raw.extend(read_n(r, len).await);
    ws::read_frame(&mut raw.as_slice(), 125)
        .await
        .unwrap()
        .unwrap()
}

async fn assert_eof(r: &mut Peer) {
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

fn masked(frame: &Frame) -> Vec<u8> {
    ws::encode(frame, Some([0xa1, 0xb2, 0xc3, 0xd4]))
}

fn unmasked(frame: &Frame) -> Vec<u8> {
    ws::encode(frame, None)
}

#[tokio::test]
async fn splice_copies_raw_bytes_both_ways() {
    let (task, mut c2, mut r2, _stop) = start_ws();
    c2.write_all(b"\xff\xfeup").await.unwrap();
    assert_eq!(read_n(&mut r2, 4).await, b"\xff\xfeup");
    r2.write_all(b"down").await.unwrap();
    assert_eq!(read_n(&mut c2, 4).await, b"down");
    drop(c2);
    drop(r2);
    let end = task.await.unwrap();
    assert_eq!(
        end,
        SpliceEnd {
            reason: EndReason::Closed,
            up: 4,
            down: 4,
            exit_code: None
        }
    );
    assert_eq!(end.as_str(), "closed");
}

/// Invalid UTF-8 text, the empty binary EOF frame, pings and the exit
/// marker pass byte for byte; the exit code is captured.
#[tokio::test]
async fn splice_copies_frames_exactly_and_captures_the_exit_code() {
    let (task, mut c2, mut r2, _stop) = start_ws();
    let up: Vec<u8> = [
        masked(&Frame::text(b"ls \xff\xfe\n".to_vec())),
        masked(&Frame::ping(b"k".to_vec())),
        masked(&Frame::binary(Vec::new())),
    ]
    .concat();
    let down: Vec<u8> = [
        unmasked(&Frame::text(b"\xe2\x82".to_vec())),
        unmasked(&Frame::text(vec![0xac; 300])),
        unmasked(&Frame::pong(b"k".to_vec())),
        unmasked(&Frame::exit_code(3)),
        unmasked(&Frame::binary(Vec::new())),
    ]
    .concat();
    c2.write_all(&up).await.unwrap();
    r2.write_all(&down).await.unwrap();
    assert_eq!(read_n(&mut r2, up.len()).await, up);
    assert_eq!(read_n(&mut c2, down.len()).await, down);
    drop(c2);
    drop(r2);
    assert_eq!(
        task.await.unwrap(),
        SpliceEnd {
            reason: EndReason::Closed,
            up: up.len() as u64,
            down: down.len() as u64,
            exit_code: Some(3)
        }
    );
}

/// The marker frame arrives in three reads (inside the header, inside
/// the payload); the last marker wins.
#[tokio::test]
async fn exit_code_captured_across_reads() {
    let (task, mut c2, mut r2, _stop) = start_ws();
    let first = unmasked(&Frame::exit_code(1));
    r2.write_all(&first).await.unwrap();
    assert_eq!(read_n(&mut c2, first.len()).await, first);
    let marker = unmasked(&Frame::exit_code(-42));
    for piece in [&marker[..1], &marker[1..20], &marker[20..]] {
        r2.write_all(piece).await.unwrap();
        // Wait until it passed, so the next piece is a separate read.
        assert_eq!(read_n(&mut c2, piece.len()).await, piece);
    }
    drop(c2);
    drop(r2);
    let end = task.await.unwrap();
    assert_eq!(end.exit_code, Some(-42));
    assert_eq!(end.down, (first.len() + marker.len()) as u64);
}

/// Stop while both directions are inside a frame: nothing is injected
/// inside a frame; each frame completes, then the close frame follows
/// (unmasked to the client, masked to the rack); bytes after the frame
/// are dropped; the peers' close frames end the session.
#[tokio::test(start_paused = true)]
async fn stop_mid_frame_closes_after_the_frame() {
    let (task, mut c2, mut r2, stop) = start_ws();
    let down_frame = unmasked(&Frame::text(vec![0xff; 200]));
    let up_frame = masked(&Frame::binary(vec![7; 300]));
    // Rack: header (4 bytes) and 98 of 200. Client: header (8) and 50 of 300.
    r2.write_all(&down_frame[..102]).await.unwrap();
    assert_eq!(read_n(&mut c2, 102).await, &down_frame[..102]);
    c2.write_all(&up_frame[..58]).await.unwrap();
    assert_eq!(read_n(&mut r2, 58).await, &up_frame[..58]);

    stop.send(()).unwrap();
    assert!(silent(&mut c2).await, "no close frame inside a frame");
    assert!(silent(&mut r2).await, "no close frame inside a frame");

    // Each side finishes its frame and sends one more, which must not
    // be forwarded after the gateway's close frame.
    r2.write_all(&down_frame[102..]).await.unwrap();
    r2.write_all(&unmasked(&Frame::text("late"))).await.unwrap();
    c2.write_all(&up_frame[58..]).await.unwrap();
    c2.write_all(&masked(&Frame::text("late"))).await.unwrap();

    assert_eq!(
        read_n(&mut c2, down_frame.len() - 102).await,
        &down_frame[102..]
    );
    let close = read_close(&mut c2, false).await;
    assert_eq!(close, Frame::close(1001, "gateway shutting down"));
    assert_eq!(read_n(&mut r2, up_frame.len() - 58).await, &up_frame[58..]);
    let close = read_close(&mut r2, true).await;
    assert_eq!(close, Frame::close(1001, "gateway shutting down"));

    c2.write_all(&masked(&Frame::close(1001, "")))
        .await
        .unwrap();
    r2.write_all(&unmasked(&Frame::close(1001, "")))
        .await
        .unwrap();
    assert_eof(&mut c2).await;
    assert_eof(&mut r2).await;
    assert_eq!(
        task.await.unwrap(),
        SpliceEnd {
            reason: EndReason::Shutdown,
            up: up_frame.len() as u64,
            down: down_frame.len() as u64,
            exit_code: None
        }
    );
}

/// A close frame that already went one way is not repeated: the client
/// closed first, so on stop only the client gets the gateway's close.
#[tokio::test(start_paused = true)]
async fn stop_after_peer_close_sends_no_second_close() {
    let (task, mut c2, mut r2, stop) = start_ws();
    let client_close = masked(&Frame::close(1000, "bye"));
    c2.write_all(&client_close).await.unwrap();
    assert_eq!(read_n(&mut r2, client_close.len()).await, client_close);
    stop.send(()).unwrap();
    let close = read_close(&mut c2, false).await;
    assert_eq!(close.close_code(), Some(1001));
    r2.write_all(&unmasked(&Frame::close(1000, "bye")))
        .await
        .unwrap();
    assert_eof(&mut r2).await;
    assert_eof(&mut c2).await;
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::Shutdown);
    assert_eq!(end.up, client_close.len() as u64);
    assert_eq!(end.down, 0);
}

/// A frame that never completes is not cut: after the drain limit the
/// connections are dropped without a close frame on that side.
#[tokio::test(start_paused = true)]
async fn stop_gives_up_on_a_frame_that_never_ends() {
    let (task, mut c2, mut r2, stop) = start_ws();
    let frame = unmasked(&Frame::text(vec![1; 100]));
    r2.write_all(&frame[..10]).await.unwrap();
    assert_eq!(read_n(&mut c2, 10).await, &frame[..10]);
    stop.send(()).unwrap();
    // The client→rack direction is between frames: the rack gets its
    // close frame at once.
    let close = read_close(&mut r2, true).await;
    assert_eq!(close.close_code(), Some(1001));
    assert_eof(&mut c2).await;
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::Shutdown);
    assert_eq!((end.up, end.down), (0, 10));
}

async fn gateway_end(reason: EndReason, idle: Duration, max: Duration) {
    let (code, text) = reason.close_frame().unwrap();
    let (task, mut c2, mut r2, _stop) = start(Framing::Websocket, idle, max);
    let up = masked(&Frame::text("whoami\n"));
    let down = unmasked(&Frame::text(b"root\n\xff".to_vec()));
    c2.write_all(&up).await.unwrap();
    assert_eq!(read_n(&mut r2, up.len()).await, up);
    r2.write_all(&down).await.unwrap();
    assert_eq!(read_n(&mut c2, down.len()).await, down);
    // Neither side answers the close frames: the gateway waits briefly,
    // then shuts the sockets.
    assert_eq!(read_close(&mut c2, false).await, Frame::close(code, text));
    assert_eq!(read_close(&mut r2, true).await, Frame::close(code, text));
    assert_eof(&mut c2).await;
    assert_eof(&mut r2).await;
    assert_eq!(
        task.await.unwrap(),
        SpliceEnd {
            reason,
            up: up.len() as u64,
            down: down.len() as u64,
            exit_code: None
        }
    );
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_sends_close_frames() {
    gateway_end(
        EndReason::IdleTimeout,
        Duration::from_secs(5),
        Duration::from_secs(100),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_session_sends_close_frames() {
    gateway_end(
        EndReason::MaxSession,
        Duration::from_secs(100),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_without_traffic() {
    let (task, mut c2, mut r2, _stop) = start(
        Framing::Websocket,
        Duration::from_secs(5),
        Duration::from_secs(100),
    );
    assert_eq!(
        read_close(&mut c2, false).await,
        Frame::close(1000, "idle timeout")
    );
    assert_eq!(read_close(&mut r2, true).await.close_code(), Some(1000));
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::IdleTimeout);
    assert_eq!((end.up, end.down, end.exit_code), (0, 0, None));
}

/// Other upgraded protocols get no websocket frames from the gateway.
#[tokio::test(start_paused = true)]
async fn opaque_sessions_are_only_shut() {
    let (task, mut c2, mut r2, stop) = start(
        Framing::Opaque,
        Duration::from_secs(3600),
        Duration::from_secs(36_000),
    );
    c2.write_all(b"\x00\x01spdy").await.unwrap();
    assert_eq!(read_n(&mut r2, 6).await, b"\x00\x01spdy");
    stop.send(()).unwrap();
    assert_eof(&mut c2).await;
    assert_eof(&mut r2).await;
    let end = task.await.unwrap();
    assert_eq!(end.reason, EndReason::Shutdown);
    assert_eq!((end.up, end.down, end.exit_code), (6, 0, None));
}

#[test]
fn framing_from_the_upgrade_header() {
    let v = |s: &'static str| http::HeaderValue::from_static(s);
    assert_eq!(
        Framing::from_upgrade(Some(&v("websocket"))),
        Framing::Websocket
    );
    assert_eq!(
        Framing::from_upgrade(Some(&v("WebSocket"))),
        Framing::Websocket
    );
    assert_eq!(Framing::from_upgrade(Some(&v("SPDY/3.1"))), Framing::Opaque);
    assert_eq!(Framing::from_upgrade(None), Framing::Opaque);
}

#[test]
fn end_reasons_and_close_codes() {
    assert_eq!(
        EndReason::Shutdown.close_frame(),
        Some((1001, "gateway shutting down"))
    );
    assert_eq!(
        EndReason::IdleTimeout.close_frame(),
        Some((1000, "idle timeout"))
    );
    assert_eq!(
        EndReason::MaxSession.close_frame(),
        Some((1008, "session too long"))
    );
    assert_eq!(EndReason::Closed.close_frame(), None);
    assert_eq!(EndReason::Error.close_frame(), None);
    assert_eq!(EndReason::IdleTimeout.as_str(), "idle-timeout");
    assert_eq!(EndReason::MaxSession.as_str(), "max-session");
    assert_eq!(EndReason::Shutdown.as_str(), "shutdown");
    assert_eq!(EndReason::Error.as_str(), "error");
}

/// A splice whose rack side is `rack` (its far end returned), on a route
/// with or without the exit marker, never stopped by the gateway.
fn start_route(exit_marker: bool) -> (tokio::task::JoinHandle<SpliceEnd>, Peer, Peer) {
    let (c1, c2) = tokio::io::duplex(4096);
    let (r1, r2) = tokio::io::duplex(4096);
    let task = tokio::spawn(splice_until(
        c1,
        r1,
        Framing::Websocket,
        exit_marker,
        Duration::from_secs(3600),
        Duration::from_secs(36_000),
        std::future::pending(),
    ));
    (task, c2, r2)
}

async fn frames_until_eof(r: &mut Peer) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = ws::read_frame(r, 4096).await.unwrap() {
        frames.push(f);
    }
    frames
}

/// The rack's connection ends between frames before the rack ended the
/// stream: the client gets what the rack sent, then the notice (with the
/// exit marker on exec routes), the EOF frame and close 1011; the session
/// ends as an error. Without the marker on other routes.
#[tokio::test]
async fn rack_lost_between_frames_tells_the_client() {
    for exit_marker in [true, false] {
        let (task, mut c2, mut r2) = start_route(exit_marker);
        r2.write_all(&unmasked(&Frame::text("hello\n")))
            .await
            .unwrap();
        drop(r2);
        let frames = frames_until_eof(&mut c2).await;
        let mut want = vec![
            Frame::text("hello\n"),
            Frame::text(format!("ERROR: {RACK_LOST}\n")),
        ];
        if exit_marker {
            want.push(Frame::text(format!("{EXIT_MARKER}:1\n")));
        }
        want.push(Frame::binary(Vec::new()));
        want.push(Frame::close(1011, "rack connection lost"));
        assert_eq!(frames, want, "exit marker: {exit_marker}");
        drop(c2);
        let end = task.await.unwrap();
        assert_eq!(end.reason, EndReason::Error);
        assert_eq!(end.down, unmasked(&Frame::text("hello\n")).len() as u64);
        assert_eq!(end.exit_code, None, "the notice's marker is not the rack's");
    }
}

/// Controls: a rack that ended the stream (the EOF frame) before its
/// connection closed gets nothing added; a rack cut inside a frame gets
/// nothing added either (nothing may follow half a frame); a client that
/// closed first is not told.
#[tokio::test]
async fn rack_that_ended_the_stream_or_was_cut_mid_frame_gets_nothing_added() {
    let (task, mut c2, mut r2) = start_route(true);
    let sent = [
        unmasked(&Frame::text("bye\n")),
        unmasked(&Frame::exit_code(0)),
        unmasked(&Frame::binary(Vec::new())),
    ]
    .concat();
    r2.write_all(&sent).await.unwrap();
    drop(r2);
    let mut got = Vec::new();
    c2.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, sent);
    drop(c2);
    let end = task.await.unwrap();
    assert_eq!((end.reason, end.exit_code), (EndReason::Closed, Some(0)));

    let (task, mut c2, mut r2) = start_route(true);
    let frame = unmasked(&Frame::text(vec![b'x'; 100]));
    r2.write_all(&frame[..50]).await.unwrap();
    drop(r2);
    let mut got = Vec::new();
    c2.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, &frame[..50]);
    drop(c2);
    assert_eq!(task.await.unwrap().reason, EndReason::Closed);

    let (task, mut c2, mut r2) = start_route(true);
    let close = masked(&Frame::close(1000, ""));
    c2.write_all(&close).await.unwrap();
    assert_eq!(read_n(&mut r2, close.len()).await, close);
    drop(r2);
    let mut got = Vec::new();
    c2.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty(), "told a client that had closed: {got:?}");
    drop(c2);
    task.await.unwrap();
}
