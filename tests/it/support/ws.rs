//! Websocket reading helpers: every test that reads frames from the
//! gateway bounds each read, so a stalled stream fails instead of hanging.

use std::time::Duration;

use rack_gateway::rack::ws::{ClientConn, Frame, Opcode};

/// How long one frame may take. Only there to turn a hang into a failure.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// The next frame, `None` at the end of the connection.
pub async fn recv(c: &mut ClientConn) -> Option<Frame> {
    tokio::time::timeout(FRAME_TIMEOUT, c.recv())
        .await
        .expect("frame within the read timeout")
        .expect("read ok")
}

/// Every frame up to and including the close frame (or the end of the
/// connection).
pub async fn read_until_eof(c: &mut ClientConn) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(f) = recv(c).await {
        let close = f.opcode == Opcode::Close;
        frames.push(f);
        if close {
            break;
        }
    }
    frames
}

/// Everything the gateway sends on a websocket until it closes (or goes
/// quiet for 5s), as text: for looking for what must never be sent.
pub async fn in_band_text(c: &mut ClientConn) -> String {
    let mut text = String::new();
    while let Ok(Ok(Some(f))) = tokio::time::timeout(Duration::from_secs(5), c.recv()).await {
        text.push_str(&String::from_utf8_lossy(&f.payload));
        if f.opcode == Opcode::Close {
            break;
        }
    }
    text
}
