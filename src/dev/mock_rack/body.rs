//! Response bodies and the rack's response shapes: buffered or generated
//! streams, stdapi's JSON and error rendering, and a minimal tar writer for
//! the files download route.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, SizeHint};
use serde::Serialize;

/// Chunk size of generated (streamed) response bodies.
const STREAM_CHUNK: usize = 64 << 10;
/// Period of the [`generated_byte`] pattern.
const PATTERN_PERIOD: usize = 251;

/// Byte `i` of the deterministic pattern served for `generated/{n}` objects
/// and other streamed downloads.
pub fn generated_byte(i: u64) -> u8 {
    ((i * 31 + 7) % PATTERN_PERIOD as u64) as u8
}

/// One period plus one chunk of the pattern, so any chunk at any offset is a
/// zero-copy slice of it.
fn pattern_table() -> &'static Bytes {
    static TABLE: OnceLock<Bytes> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..(PATTERN_PERIOD + STREAM_CHUNK) as u64)
            .map(generated_byte)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// Response body: a buffer, or a lazily generated pattern stream (chunked
/// on the wire, as the rack's streamed responses are).
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Pattern { offset: u64, remaining: u64 },
}

impl MockBody {
    pub(crate) fn empty() -> Self {
        MockBody::Full(None)
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        MockBody::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub(crate) fn pattern(len: u64) -> Self {
        MockBody::Pattern {
            offset: 0,
            remaining: len,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let frame = match self.get_mut() {
            MockBody::Full(bytes) => bytes.take().map(http_body::Frame::data),
            MockBody::Pattern { offset, remaining } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(STREAM_CHUNK as u64) as usize;
                    let start = (*offset % PATTERN_PERIOD as u64) as usize;
                    *offset += n as u64;
                    *remaining -= n as u64;
                    Some(http_body::Frame::data(
                        pattern_table().slice(start..start + n),
                    ))
                }
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Pattern { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            MockBody::Pattern { .. } => SizeHint::default(),
        }
    }
}

pub(crate) type Resp = Response<MockBody>;

pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: MockBody) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn ok() -> Resp {
    respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        MockBody::full("ok\n"),
    )
}

/// stdapi renders objects pretty-printed with two-space indents.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    respond(StatusCode::OK, "application/json", MockBody::full(body))
}

pub(crate) fn stream(len: u64) -> Resp {
    respond(
        StatusCode::OK,
        "application/octet-stream",
        MockBody::pattern(len),
    )
}

pub(crate) fn not_found_page() -> Resp {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        MockBody::full("404 page not found\n"),
    )
}

/// A handler error the way stdapi renders it.
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{kind} not found: {id}"))
    }

    pub(crate) fn render(self, wants_json: bool) -> Resp {
        if wants_json {
            let body = serde_json::json!({ "error": self.message }).to_string();
            respond(self.status, "application/json", MockBody::full(body))
        } else {
            respond(
                self.status,
                "text/plain; charset=utf-8",
                MockBody::full(format!("{}\n", self.message)),
            )
        }
    }
}

pub(crate) type ApiResult = Result<Resp, ApiError>;

impl ApiError {
    /// A Go error without an explicit status: stdapi renders it as 500.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// A ustar archive of regular files, as `tar -cf -` in a pod writes it.
pub(crate) fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        let mut head = [0u8; 512];
        let name = name.trim_start_matches('/').as_bytes();
        head[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        head[100..107].copy_from_slice(b"0000644");
        head[108..115].copy_from_slice(b"0000000");
        head[116..123].copy_from_slice(b"0000000");
        head[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
        head[136..147].copy_from_slice(b"00000000000");
        head[156] = b'0';
        head[257..263].copy_from_slice(b"ustar\0");
        head[263..265].copy_from_slice(b"00");
        head[148..156].copy_from_slice(b"        ");
        let sum: u32 = head.iter().map(|b| u32::from(*b)).sum();
        head[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
