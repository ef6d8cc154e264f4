//! The websocket frame tracker (`rack::ws::FrameTracker`): its reading of
//! a byte stream does not depend on how the stream is sliced, and on a
//! stream of encoded frames it ends exactly at each frame and reports the
//! exit code of the last exit-marker frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rack_gateway::rack::ws::{
    encode, parse_exit_code, Frame, FrameHead, FrameTracker, Opcode, EXIT_MARKER,
};

/// Runs `stream` through a tracker in slices whose sizes come from `sizes`.
fn track(stream: &[u8], sizes: &[u8]) -> (FrameTracker, Vec<FrameHead>) {
    let mut t = FrameTracker::new();
    let mut heads = Vec::new();
    let mut rest = stream;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(k % sizes.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s) + 1);
        k += 1;
        let mut slice = &rest[..n.min(rest.len())];
        rest = &rest[slice.len()..];
        while !slice.is_empty() {
            let (used, head) = t.step(slice);
            assert!(used > 0 && used <= slice.len());
            heads.extend(head);
            slice = &slice[used..];
        }
    }
    (t, heads)
}

fn frame(kind: u8, payload: &[u8]) -> Frame {
    let mut f = match kind % 6 {
        0 => Frame::text(payload.to_vec()),
        1 => Frame::binary(payload.to_vec()),
        2 => Frame::ping(
            payload
                .get(..payload.len().min(125))
                .unwrap_or_default()
                .to_vec(),
        ),
        3 => Frame::exit_code(i32::from(payload.first().copied().unwrap_or(0)) - 128),
        4 => {
            let mut text = format!("{EXIT_MARKER}:").into_bytes();
            text.extend_from_slice(payload);
            Frame::text(text)
        }
        _ => Frame::pong(
            payload
                .get(..payload.len().min(125))
                .unwrap_or_default()
                .to_vec(),
        ),
    };
    if kind & 0x40 != 0 && f.opcode != Opcode::Ping && f.opcode != Opcode::Pong {
        f.fin = false;
    }
    f
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (sizes, body) = rest.split_at(rest.len().min(usize::from(mode % 8)));
    if mode & 0x80 == 0 {
        // Raw bytes: whole or sliced, the same reading.
        let (whole, heads) = track(body, &[]);
        let (sliced, sliced_heads) = track(body, sizes);
        assert_eq!(heads, sliced_heads);
        assert_eq!(whole.frames(), sliced.frames());
        assert_eq!(whole.exit_code(), sliced.exit_code());
        assert_eq!(whole.at_boundary(), sliced.at_boundary());
        let mut fed = FrameTracker::new();
        assert_eq!(fed.feed(body), heads.len());
        return;
    }
    // Encoded frames: chunks of `len, kind, mask?, payload`.
    let mut stream = Vec::new();
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 2 <= body.len() && frames.len() < 64 {
        let (len, kind) = (usize::from(body[i]), body[i + 1]);
        i += 2;
        let payload = &body[i..(i + len).min(body.len())];
        i += payload.len();
        let f = frame(kind, payload);
        let mask = (kind & 0x80 != 0).then_some([kind, len as u8, 0x5a, 0xa5]);
        stream.extend(encode(&f, mask));
        frames.push(f);
    }
    let (t, heads) = track(&stream, sizes);
    assert_eq!(heads.len(), frames.len());
    assert_eq!(t.frames(), frames.len() as u64);
    assert!(t.at_boundary());
    for (h, f) in heads.iter().zip(&frames) {
        assert_eq!(
            (h.fin, h.opcode, h.len),
            (f.fin, f.opcode, f.payload.len() as u64)
        );
    }
    let expected = frames
        .iter()
        .filter(|f| f.fin && f.opcode == Opcode::Text && f.payload.len() <= 64)
        .filter(|f| f.payload.starts_with(format!("{EXIT_MARKER}:").as_bytes()))
        .filter_map(|f| parse_exit_code(&f.payload))
        .last();
    assert_eq!(t.exit_code(), expected);
});
