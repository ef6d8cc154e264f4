//! A minimal RFC 6455 websocket frame codec that never validates UTF-8.
//!
//! Convox streams carry raw terminal bytes in *text* frames, so a text
//! payload may be invalid UTF-8 (a multibyte character split across two
//! reads, or binary output). Strict libraries such as tungstenite reject
//! those frames, which would break `convox exec`. This codec treats every
//! payload as opaque bytes. The gateway itself splices websocket bytes after
//! the handshake; it uses this codec only to speak in-band (refusals, exit
//! markers). The mock rack and the tests use it for both directions.
//!
//! Scope is deliberately small: single frames in and out (no message
//! reassembly, no extensions, no compression), plus a plain-TCP client
//! handshake for tests and tools.

use std::io;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The marker that precedes the exit code in the last text frame of an exec
/// or shell stream: `F1E49A85-…:<code>\n`.
pub const EXIT_MARKER: &str = "F1E49A85-0AD7-4AEF-A618-C249C6E6568D";

/// The GUID that RFC 6455 §1.3 appends to the client key.
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest frame the test client accepts; generous because it only reads
/// what the mock rack or the gateway sends.
const CLIENT_MAX_PAYLOAD: usize = 64 << 20;

/// Longest response head `client_connect` reads before giving up.
const MAX_RESPONSE_HEAD: usize = 64 << 10;

/// Computes `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`:
/// base64(SHA-1(key + GUID)).
pub fn accept_key(client_key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(client_key.as_bytes());
    ctx.update(HANDSHAKE_GUID.as_bytes());
    STANDARD.encode(ctx.finish())
}

/// A frame opcode. Reserved values are kept rather than rejected so a
/// relay can decide what to do with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    Reserved(u8),
}

impl Opcode {
    /// Maps the low four bits of the first header byte to an opcode.
    pub fn from_u8(bits: u8) -> Self {
        match bits & 0x0f {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xa => Opcode::Pong,
            other => Opcode::Reserved(other),
        }
    }

    /// The four-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
            Opcode::Reserved(bits) => bits & 0x0f,
        }
    }

    /// Control frames (close, ping, pong and reserved 0xB–0xF) must be
    /// short and unfragmented.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x08 != 0
    }
}

/// One websocket frame with an unmasked payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

impl Frame {
    fn new(opcode: Opcode, payload: Vec<u8>) -> Self {
        Frame {
            fin: true,
            opcode,
            payload,
        }
    }

    /// A text frame; the bytes are not required to be UTF-8.
    pub fn text(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(Opcode::Text, payload.into())
    }

    /// A binary frame. Convox uses the empty binary frame as end-of-stream.
    pub fn binary(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(Opcode::Binary, payload.into())
    }

    /// A close frame. The reason is cut (at a character boundary) so the
    /// payload stays within the 125-byte control-frame limit.
    pub fn close(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        Self::new(Opcode::Close, payload)
    }

    pub fn ping(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(Opcode::Ping, payload.into())
    }

    pub fn pong(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(Opcode::Pong, payload.into())
    }

    /// The exit-code frame that ends an exec or shell stream.
    pub fn exit_code(code: i32) -> Self {
        Self::text(format!("{EXIT_MARKER}:{code}\n"))
    }

    /// The status code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (Opcode::Close, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// True for any binary frame: the Convox client treats all of them as
    /// end-of-stream, whatever they carry.
    pub fn is_eof(&self) -> bool {
        self.opcode == Opcode::Binary
    }
}

/// Finds the exit marker in a payload and parses the code after it, the way
/// the Convox client does.
pub fn parse_exit_code(payload: &[u8]) -> Option<i32> {
    let marker = format!("{EXIT_MARKER}:");
    let start = payload
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())?
        + marker.len();
    std::str::from_utf8(&payload[start..])
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// XORs `buf` with the masking key (the same operation masks and unmasks).
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        for (byte, key) in chunk.iter_mut().zip(mask) {
            *byte ^= key;
        }
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Serialises a frame. Clients must pass a mask, servers must not.
pub fn encode(frame: &Frame, mask: Option<[u8; 4]>) -> Vec<u8> {
    let len = frame.payload.len();
    let mut out = Vec::with_capacity(len + 14);
    out.push((u8::from(frame.fin) << 7) | frame.opcode.as_u8());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(&frame.payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.extend_from_slice(&frame.payload),
    }
    out
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Reads one frame. Returns `None` on a clean EOF before the first header
/// byte; an EOF inside a frame is `UnexpectedEof`. Masked payloads are
/// unmasked. Payloads larger than `max_payload`, reserved bits without an
/// extension, and malformed control frames are `InvalidData`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_payload: usize,
) -> io::Result<Option<Frame>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let b0 = first[0];
    let b1 = r.read_u8().await?;
    if b0 & 0x70 != 0 {
        return Err(invalid("websocket frame has reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0);
    let len = match b1 & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => {
            let len = r.read_u64().await?;
            if len >> 63 != 0 {
                return Err(invalid("websocket frame length has its top bit set"));
            }
            len
        }
        short => u64::from(short),
    };
    if opcode.is_control() && (len > 125 || !fin) {
        return Err(invalid("websocket control frame is fragmented or too long"));
    }
    if len > max_payload as u64 {
        return Err(invalid("websocket frame exceeds the payload limit"));
    }
    let mask = if b1 & 0x80 != 0 {
        let mut key = [0u8; 4];
        r.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if let Some(key) = mask {
        apply_mask(&mut payload, key);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Writes one frame and flushes, so frames are never merged or delayed by
/// a buffering or TLS writer (the exit-marker parse depends on 1:1 frames).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    mask: Option<[u8; 4]>,
) -> io::Result<()> {
    w.write_all(&encode(frame, mask)).await?;
    w.flush().await
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| io::Error::other("system random number generator failed"))?;
    Ok(buf)
}

/// A fresh random masking key, as every client frame needs.
pub fn random_mask() -> io::Result<[u8; 4]> {
    random_bytes::<4>()
}

/// The client end of a websocket (or refused handshake) made by
/// [`client_connect`].
pub struct ClientConn {
    /// Status code of the handshake response (101 on success).
    pub status: u16,
    /// Response headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The connection, positioned right after the response head. Bytes the
    /// server sent after the head are still in the buffer.
    pub stream: BufReader<TcpStream>,
}

impl ClientConn {
    /// First response header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sends a frame masked with a fresh random key, as a client must.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let mask = random_mask()?;
        write_frame(&mut self.stream, frame, Some(mask)).await
    }

    /// Reads the next frame from the server.
    pub async fn recv(&mut self) -> io::Result<Option<Frame>> {
        read_frame(&mut self.stream, CLIENT_MAX_PAYLOAD).await
    }

    /// Reads the response body of a refused handshake: `Content-Length`
    /// bytes, a chunked body, or everything up to EOF.
    pub async fn read_body(&mut self) -> io::Result<Vec<u8>> {
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = self
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut line = String::new();
                self.stream.read_line(&mut line).await?;
                let size_text = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| invalid("bad chunk size in response body"))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        line.clear();
                        if self.stream.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                            return Ok(body);
                        }
                    }
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                line.clear();
                self.stream.read_line(&mut line).await?;
            }
        } else if let Some(len) = length {
            body.resize(len, 0);
            self.stream.read_exact(&mut body).await?;
        } else {
            self.stream.read_to_end(&mut body).await?;
        }
        Ok(body)
    }
}

/// Reads one line of the handshake response head, without its line ending.
async fn read_head_line(
    stream: &mut BufReader<TcpStream>,
    line: &mut Vec<u8>,
    head_len: &mut usize,
) -> io::Result<String> {
    line.clear();
    let n = stream.read_until(b'\n', line).await?;
    *head_len += n;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside the handshake response",
        ));
    }
    if *head_len > MAX_RESPONSE_HEAD {
        return Err(invalid("handshake response head is too long"));
    }
    Ok(String::from_utf8_lossy(line).trim_end().to_owned())
}

/// Test/CLI helper: a plain-TCP websocket client handshake.
///
/// Sends `GET {path} HTTP/1.1` with `Host` (unless `headers` has one),
/// `Upgrade: websocket`, `Connection: Upgrade`, a random
/// `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`, then `headers`
/// verbatim. Any status is returned to the caller; a 101 whose
/// `Sec-WebSocket-Accept` does not match the key is an error.
pub async fn client_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<ClientConn> {
    let key = STANDARD.encode(random_bytes::<16>()?);
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    request.push_str(&format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    ));
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");

    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut stream = BufReader::new(tcp);
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut head_len = 0usize;
    let mut line = Vec::new();

    let status_line = read_head_line(&mut stream, &mut line, &mut head_len).await?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("malformed handshake status line"))?;
    let mut response_headers = Vec::new();
    loop {
        let header = read_head_line(&mut stream, &mut line, &mut head_len).await?;
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            response_headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let conn = ClientConn {
        status,
        headers: response_headers,
        stream,
    };
    if status == 101 && conn.header("sec-websocket-accept") != Some(accept_key(&key).as_str()) {
        return Err(invalid("server sent a wrong Sec-WebSocket-Accept"));
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn opcodes_round_trip() {
        for bits in 0u8..16 {
            assert_eq!(Opcode::from_u8(bits).as_u8(), bits);
        }
        assert!(Opcode::Ping.is_control());
        assert!(!Opcode::Text.is_control());
        assert_eq!(Opcode::from_u8(0x3), Opcode::Reserved(3));
    }
}
