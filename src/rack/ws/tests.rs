use super::*;

async fn round_trip(frame: &Frame, mask: Option<[u8; 4]>) -> Frame {
    let bytes = encode(frame, mask);
    let mut reader = bytes.as_slice();
    let decoded = read_frame(&mut reader, usize::MAX)
        .await
        .expect("decode")
        .expect("a frame");
    assert!(reader.is_empty(), "decoder left bytes behind");
    decoded
}

#[tokio::test]
async fn round_trips_every_length_class() {
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        for mask in [None, Some([0x12, 0x34, 0x56, 0x78])] {
            let frame = Frame::binary(payload.clone());
            assert_eq!(
                round_trip(&frame, mask).await,
                frame,
                "len {len} mask {mask:?}"
            );
        }
    }
}

#[test]
fn header_length_encoding_matches_rfc() {
    assert_eq!(encode(&Frame::text(vec![0; 125]), None)[1], 125);
    let medium = encode(&Frame::text(vec![0; 126]), None);
    assert_eq!(&medium[1..4], &[126, 0, 126]);
    let long = encode(&Frame::text(vec![0; 65536]), None);
    assert_eq!(long[1], 127);
    assert_eq!(&long[2..10], &65536u64.to_be_bytes());
    let masked = encode(
        &Frame::text(b"Hello".to_vec()),
        Some([0x37, 0xfa, 0x21, 0x3d]),
    );
    // RFC 6455 §5.7: a masked "Hello".
    assert_eq!(
        masked,
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
}

#[tokio::test]
async fn invalid_utf8_text_is_preserved() {
    let frame = Frame::text(vec![0x66, 0xff, 0xfe, 0x0a]);
    for mask in [None, Some([1, 2, 3, 4])] {
        let decoded = round_trip(&frame, mask).await;
        assert_eq!(decoded.opcode, Opcode::Text);
        assert_eq!(decoded.payload, [0x66, 0xff, 0xfe, 0x0a]);
    }
}

#[tokio::test]
async fn clean_eof_and_truncation() {
    let mut empty: &[u8] = &[];
    assert!(read_frame(&mut empty, 10).await.unwrap().is_none());
    let bytes = encode(&Frame::text(b"abcdef".to_vec()), None);
    let mut cut = &bytes[..4];
    let err = read_frame(&mut cut, 100).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn rejects_oversized_and_bad_control_frames() {
    let bytes = encode(&Frame::binary(vec![0; 200]), None);
    let err = read_frame(&mut bytes.as_slice(), 199).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);

    let mut ping = encode(&Frame::ping(vec![0; 10]), None);
    ping[0] &= 0x7f;
    let err = read_frame(&mut ping.as_slice(), 1000).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn accept_key_matches_rfc_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn close_frames_and_exit_markers() {
    let close = Frame::close(1000, "bye");
    assert_eq!(close.close_code(), Some(1000));
    assert_eq!(close.payload, b"\x03\xe8bye");
    assert_eq!(Frame::close(1001, &"é".repeat(100)).payload.len(), 124);
    assert_eq!(Frame::text("x").close_code(), None);

    let exit = Frame::exit_code(42);
    assert_eq!(
        exit.payload,
        b"F1E49A85-0AD7-4AEF-A618-C249C6E6568D:42\n".to_vec()
    );
    assert_eq!(parse_exit_code(&exit.payload), Some(42));
    assert_eq!(parse_exit_code(b"no marker"), None);
}

/// Serialises a frame with a chosen length form (0 shortest, 1 16-bit,
/// 2 64-bit; longer forms than needed are legal on the wire for the
/// tracker's purposes) and reserved bits, as the tracker must follow.
fn raw_frame(
    fin: bool,
    opcode: u8,
    rsv: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    form: u8,
) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let form = match form {
        0 if len < 126 => 0,
        0 | 1 if len <= 0xffff => 1,
        _ => 2,
    };
    match form {
        0 => out.push(mask_bit | len as u8),
        1 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[body..], key);
    }
    out
}

/// Feeds `chunks` in order; returns (end offset, header) per frame.
fn boundaries(t: &mut FrameTracker, chunks: &[&[u8]]) -> Vec<(usize, FrameHead)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let (n, frame) = t.step(rest);
            assert!(n > 0, "step made no progress");
            offset += n;
            rest = &rest[n..];
            if let Some(head) = frame {
                assert!(t.at_boundary());
                out.push((offset, head));
            }
        }
    }
    out
}

fn byte_by_byte(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.chunks(1).collect()
}

#[test]
fn tracker_follows_every_length_form_and_mask() {
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70_000] {
        for mask in [None, Some([9, 8, 7, 6])] {
            let payload = vec![0x5a; len];
            let mut stream = encode(&Frame::binary(payload.clone()), mask);
            let first = stream.len();
            stream.extend(encode(&Frame::text("x"), mask));
            for chunks in [vec![stream.as_slice()], byte_by_byte(&stream)] {
                let mut t = FrameTracker::new();
                let got = boundaries(&mut t, &chunks);
                assert_eq!(got.len(), 2, "len {len} mask {mask:?}");
                assert_eq!(got[0].0, first);
                assert_eq!(
                    got[0].1,
                    FrameHead {
                        fin: true,
                        opcode: Opcode::Binary,
                        mask,
                        len: len as u64
                    }
                );
                assert_eq!(got[1].0, stream.len());
                assert_eq!(t.frames(), 2);
                assert!(t.at_boundary());
            }
        }
    }
}

#[test]
fn tracker_until_boundary_never_crosses_a_frame() {
    let mut t = FrameTracker::new();
    assert_eq!(t.until_boundary(), 0);
    // A masked frame with a 16-bit length: 2 + 2 + 4 header bytes.
    let frame = encode(&Frame::text(vec![1; 300]), Some([1, 2, 3, 4]));
    t.feed(&frame[..1]);
    assert!(!t.at_boundary());
    assert_eq!(
        t.until_boundary(),
        1,
        "only the second header byte is known to follow"
    );
    t.feed(&frame[1..2]);
    assert_eq!(t.until_boundary(), 6, "rest of the header");
    t.feed(&frame[2..5]);
    assert_eq!(t.until_boundary(), 3);
    t.feed(&frame[5..8]);
    assert_eq!(t.until_boundary(), 300);
    t.feed(&frame[8..108]);
    assert_eq!(t.until_boundary(), 200);
    assert_eq!(t.feed(&frame[108..]), 1);
    assert_eq!(t.until_boundary(), 0);
    assert!(t.at_boundary());
}

#[test]
fn tracker_follows_control_frames_between_fragments() {
    let mask = Some([0xde, 0xad, 0xbe, 0xef]);
    let parts = [
        raw_frame(false, 0x1, 0, mask, b"hel", 0),
        encode(&Frame::ping(b"p".to_vec()), mask),
        raw_frame(false, 0x0, 0, mask, &[0xff; 200], 0),
        encode(&Frame::pong(Vec::new()), mask),
        raw_frame(true, 0x0, 0, mask, b"lo", 0),
        encode(&Frame::close(1000, "bye"), mask),
    ];
    let stream = parts.concat();
    let mut ends = Vec::new();
    let mut at = 0;
    for p in &parts {
        at += p.len();
        ends.push(at);
    }
    for chunks in [vec![stream.as_slice()], byte_by_byte(&stream)] {
        let mut t = FrameTracker::new();
        let got = boundaries(&mut t, &chunks);
        let offsets: Vec<usize> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, ends);
        let opcodes: Vec<Opcode> = got.iter().map(|(_, h)| h.opcode).collect();
        assert_eq!(
            opcodes,
            [
                Opcode::Text,
                Opcode::Ping,
                Opcode::Continuation,
                Opcode::Pong,
                Opcode::Continuation,
                Opcode::Close
            ]
        );
        assert!(t.close_seen());
        assert_eq!(t.exit_code(), None);
    }
}

#[test]
fn tracker_captures_the_exit_code() {
    let marker = |code: i32, mask| encode(&Frame::exit_code(code), mask);
    for mask in [None, Some([0x11, 0x22, 0x33, 0x44])] {
        let mut stream = encode(&Frame::text(b"output\xff\n".to_vec()), mask);
        stream.extend(marker(7, mask));
        stream.extend(encode(&Frame::binary(Vec::new()), mask));
        for chunks in [vec![stream.as_slice()], byte_by_byte(&stream)] {
            let mut t = FrameTracker::new();
            boundaries(&mut t, &chunks);
            assert_eq!(t.exit_code(), Some(7), "mask {mask:?}");
        }
    }

    // The last code wins; negative codes parse.
    let mut t = FrameTracker::new();
    t.feed(&marker(3, None));
    t.feed(&marker(-2, None));
    assert_eq!(t.exit_code(), Some(-2));

    // Not an exit frame: marker not at the start, too long, fragmented,
    // binary, or no number after it. None of them change the code.
    let not_exit = [
        encode(&Frame::text(format!("x{EXIT_MARKER}:1\n")), None),
        encode(
            &Frame::text(format!("{EXIT_MARKER}:1{}\n", " ".repeat(40))),
            None,
        ),
        raw_frame(
            false,
            0x1,
            0,
            None,
            format!("{EXIT_MARKER}:1\n").as_bytes(),
            0,
        ),
        encode(&Frame::binary(format!("{EXIT_MARKER}:1\n")), None),
        encode(&Frame::text(format!("{EXIT_MARKER}:one\n")), None),
        encode(&Frame::text(format!("{EXIT_MARKER}1\n")), None),
    ];
    for frame in &not_exit {
        t.feed(frame);
        assert_eq!(t.exit_code(), Some(-2), "frame {frame:?}");
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    #[derive(Clone, Debug)]
    struct Spec {
        fin: bool,
        opcode: u8,
        rsv: u8,
        mask: Option<[u8; 4]>,
        payload: Vec<u8>,
        form: u8,
    }

    impl Spec {
        fn bytes(&self) -> Vec<u8> {
            raw_frame(
                self.fin,
                self.opcode,
                self.rsv,
                self.mask,
                &self.payload,
                self.form,
            )
        }

        /// The exit code this frame carries by the tracker's rule.
        fn exit_code(&self) -> Option<i32> {
            if !self.fin || self.opcode != 0x1 || self.payload.len() > EXIT_CAPTURE_MAX {
                return None;
            }
            let text = std::str::from_utf8(&self.payload).ok()?;
            text.strip_prefix(EXIT_MARKER)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        }
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..140),
            2 => proptest::collection::vec(any::<u8>(), 126..600),
            3 => any::<i32>().prop_map(|c| format!("{EXIT_MARKER}:{c}\n").into_bytes()),
            1 => (20usize..30).prop_map(|pad| format!("{EXIT_MARKER}:12{}", " ".repeat(pad)).into_bytes()),
            1 => (65_536usize..65_600).prop_map(|n| vec![0xa5; n]),
        ]
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            any::<bool>(),
            prop_oneof![
                4 => Just(0x1u8),
                2 => Just(0x2u8),
                1 => Just(0x0u8),
                1 => prop_oneof![Just(0x8u8), Just(0x9), Just(0xa)],
                1 => 0u8..16,
            ],
            prop_oneof![6 => Just(0u8), 1 => 0u8..8],
            proptest::option::of(any::<[u8; 4]>()),
            payload(),
            0u8..3,
        )
            .prop_map(|(fin, opcode, rsv, mask, payload, form)| Spec {
                fin,
                opcode,
                rsv,
                mask,
                payload,
                form,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Frames split at random points give the same boundaries,
        /// headers and exit code as the whole stream, and both match
        /// what was serialised.
        #[test]
        fn split_points_do_not_matter(
            specs in proptest::collection::vec(spec(), 0..12),
            cuts in proptest::collection::vec(any::<Index>(), 0..24),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut code = None;
            for s in &specs {
                stream.extend(s.bytes());
                expected.push((stream.len(), s.opcode, s.fin, s.mask, s.payload.len() as u64));
                code = s.exit_code().or(code);
            }

            let mut whole = FrameTracker::new();
            let got_whole = boundaries(&mut whole, &[stream.as_slice()]);

            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            points.dedup();
            let chunks: Vec<&[u8]> = points.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
            let mut split = FrameTracker::new();
            let got_split = boundaries(&mut split, &chunks);

            prop_assert_eq!(&got_whole, &got_split);
            let seen: Vec<_> = got_whole
                .iter()
                .map(|(o, h)| (*o, h.opcode.as_u8(), h.fin, h.mask, h.len))
                .collect();
            prop_assert_eq!(seen, expected);
            prop_assert_eq!(whole.exit_code(), code);
            prop_assert_eq!(split.exit_code(), code);
            prop_assert!(whole.at_boundary() && split.at_boundary());
            prop_assert_eq!(
                whole.close_seen(),
                specs.iter().any(|s| s.opcode == 0x8)
            );
        }

        /// Reading at most `until_boundary()` bytes at a time, as the
        /// splice does when it drains, stops exactly on every boundary.
        #[test]
        fn until_boundary_lands_on_every_boundary(
            specs in proptest::collection::vec(spec(), 0..8),
        ) {
            let mut stream = Vec::new();
            let mut ends = vec![0];
            for s in &specs {
                stream.extend(s.bytes());
                ends.push(stream.len());
            }
            let mut t = FrameTracker::new();
            let mut at = 0;
            let mut stops = vec![0];
            while at < stream.len() {
                let n = match t.until_boundary() {
                    0 => {
                        prop_assert!(ends.contains(&at));
                        1
                    }
                    n => n,
                };
                let next = *ends.iter().find(|&&e| e > at).unwrap();
                prop_assert!(at + n <= next, "crossed a boundary at {}", at);
                t.feed(&stream[at..at + n]);
                at += n;
                if t.at_boundary() {
                    stops.push(at);
                }
            }
            stops.dedup();
            prop_assert_eq!(stops, ends);
        }
    }
}

#[test]
fn opcodes_round_trip() {
    for bits in 0u8..16 {
        assert_eq!(Opcode::from_u8(bits).as_u8(), bits);
    }
    assert!(Opcode::Ping.is_control());
    assert!(!Opcode::Text.is_control());
    assert_eq!(Opcode::from_u8(0x3), Opcode::Reserved(3));
}
