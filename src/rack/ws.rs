//! A minimal RFC 6455 websocket frame codec that never validates UTF-8.
//!
//! Convox streams carry raw terminal bytes in *text* frames, so a text
//! payload may be invalid UTF-8 (a multibyte character split across two
//! reads, or binary output). Strict libraries such as tungstenite reject
//! those frames, which would break `convox exec`. This codec treats every
//! payload as opaque bytes. The gateway itself splices websocket bytes after
//! the handshake; it uses this codec only to speak in-band (refusals, exit
//! markers, close frames) and [`FrameTracker`] to follow frame boundaries in
//! the spliced bytes without changing or buffering them. The mock rack and
//! the tests use it for both directions.
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
pub(crate) fn accept_key(client_key: &str) -> String {
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
    pub(crate) fn from_u8(bits: u8) -> Self {
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
    pub(crate) fn as_u8(self) -> u8 {
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
    pub(crate) fn is_control(self) -> bool {
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

/// Longest unfragmented text payload [`FrameTracker`] keeps to look for the
/// exit marker: the marker, `:`, any `i32` and a newline fit with room to
/// spare. Longer frames are never exit-marker frames and are not kept.
pub(crate) const EXIT_CAPTURE_MAX: usize = 64;

/// A frame header as [`FrameTracker`] saw it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    /// Payload length as sent (7-, 16- or 64-bit form).
    pub len: u64,
}

/// Follows frame boundaries in a websocket byte stream, one direction, fed
/// with the bytes as they pass in slices split anywhere.
///
/// A pure state machine: it never changes, rejects or buffers the stream.
/// It keeps at most one frame header (14 bytes) and, for small unfragmented
/// text frames only, up to [`EXIT_CAPTURE_MAX`] unmasked payload bytes to
/// find the exit marker. Masked (client) and unmasked (server) frames are
/// both understood; the mask bit of each header decides. Frames are tracked
/// by their length alone: reserved bits, reserved opcodes, long control
/// frames and control frames between fragments are followed, not judged,
/// so a relay keeps passing whatever the peers accept.
#[derive(Clone, Debug)]
pub struct FrameTracker {
    /// Header bytes collected so far for the next frame.
    head: [u8; 14],
    have: usize,
    /// Header length: 2 until the second byte says more.
    need: usize,
    /// The frame whose payload is passing, if any.
    frame: Option<FrameHead>,
    remaining: u64,
    /// Unmasked payload of a small unfragmented text frame.
    capture: Option<([u8; EXIT_CAPTURE_MAX], usize)>,
    exit_code: Option<i32>,
    close_seen: bool,
    /// A binary frame passed: the convox CLI reads any as end of stream.
    binary_seen: bool,
    frames: u64,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameTracker {
    /// A tracker at the start of a stream (a frame boundary).
    pub fn new() -> Self {
        FrameTracker {
            head: [0; 14],
            have: 0,
            need: 2,
            frame: None,
            remaining: 0,
            capture: None,
            exit_code: None,
            close_seen: false,
            binary_seen: false,
            frames: 0,
        }
    }

    /// Consumes `bytes` up to and including the end of the current frame.
    /// Returns how many bytes it consumed and, if a frame ended there, its
    /// header. Call again with the rest to go on; an empty slice is a no-op.
    pub fn step(&mut self, bytes: &[u8]) -> (usize, Option<FrameHead>) {
        let mut i = 0;
        loop {
            if i == bytes.len() {
                return (i, None);
            }
            match self.frame {
                None => {
                    let take = (self.need - self.have).min(bytes.len() - i);
                    self.head[self.have..self.have + take].copy_from_slice(&bytes[i..i + take]);
                    self.have += take;
                    i += take;
                    if self.have == 2 && self.need == 2 {
                        self.need = header_len(self.head[1]);
                    }
                    if self.have == self.need {
                        let head = parse_head(&self.head[..self.need]);
                        self.have = 0;
                        self.need = 2;
                        self.remaining = head.len;
                        self.capture = (head.fin
                            && head.opcode == Opcode::Text
                            && head.len <= EXIT_CAPTURE_MAX as u64)
                            .then_some(([0; EXIT_CAPTURE_MAX], 0));
                        self.frame = Some(head);
                        if head.len == 0 {
                            return (i, Some(self.finish()));
                        }
                    }
                }
                Some(head) => {
                    let take = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    if let Some((buf, len)) = &mut self.capture {
                        for &b in &bytes[i..i + take] {
                            let key = head.mask.map_or(0, |m| m[*len % 4]);
                            buf[*len] = b ^ key;
                            *len += 1;
                        }
                    }
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        return (i, Some(self.finish()));
                    }
                }
            }
        }
    }

    /// Consumes all of `bytes`; returns how many frames ended inside.
    pub fn feed(&mut self, mut bytes: &[u8]) -> usize {
        let mut ended = 0;
        while !bytes.is_empty() {
            let (n, frame) = self.step(bytes);
            ended += usize::from(frame.is_some());
            bytes = &bytes[n..];
        }
        ended
    }

    fn finish(&mut self) -> FrameHead {
        let head = self.frame.take().expect("a frame in progress");
        self.frames += 1;
        match head.opcode {
            Opcode::Close => self.close_seen = true,
            Opcode::Binary => self.binary_seen = true,
            _ => {}
        }
        if let Some((buf, len)) = self.capture.take() {
            let payload = &buf[..len];
            if payload.starts_with(EXIT_MARKER.as_bytes())
                && payload.get(EXIT_MARKER.len()) == Some(&b':')
            {
                if let Some(code) = parse_exit_code(payload) {
                    self.exit_code = Some(code);
                }
            }
        }
        head
    }

    /// True between frames: nothing of a header or payload is pending.
    pub fn at_boundary(&self) -> bool {
        self.frame.is_none() && self.have == 0
    }

    /// How many more bytes certainly belong to the current frame: 0 at a
    /// boundary, the rest of the payload inside one, and inside a header
    /// the header bytes still missing (as far as known yet). Reading at most
    /// this many bytes never crosses into the next frame.
    pub(crate) fn until_boundary(&self) -> usize {
        match self.frame {
            Some(_) => usize::try_from(self.remaining).unwrap_or(usize::MAX),
            None if self.have == 0 => 0,
            None => self.need - self.have,
        }
    }

    /// The code of the last complete exit-marker frame: an unfragmented
    /// text frame of at most [`EXIT_CAPTURE_MAX`] bytes whose payload
    /// starts with `<EXIT_MARKER>:` followed by an integer.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// True once a complete close frame has passed.
    pub(crate) fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// True once the stream said it is over the way the rack says it: a
    /// binary frame (the empty EOF frame stdapi always sends last) or a
    /// close frame. A stream that stops short of both was cut off.
    pub(crate) fn end_seen(&self) -> bool {
        self.close_seen || self.binary_seen
    }

    /// Complete frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// Header length from the second header byte: 2, plus the extended
/// length, plus the masking key.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// Parses a complete header (`header_len` bytes).
fn parse_head(h: &[u8]) -> FrameHead {
    let (len, rest) = match h[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), &h[4..]),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            (u64::from_be_bytes(b), &h[10..])
        }
        short => (u64::from(short), &h[2..]),
    };
    let mask = (h[1] & 0x80 != 0).then(|| [rest[0], rest[1], rest[2], rest[3]]);
    FrameHead {
        fin: h[0] & 0x80 != 0,
        opcode: Opcode::from_u8(h[0]),
        mask,
        len,
    }
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
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
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
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
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
pub(crate) fn random_mask() -> io::Result<[u8; 4]> {
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
mod tests;
