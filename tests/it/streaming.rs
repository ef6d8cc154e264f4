//! Large and slow bodies through the gateway (convox-api.md §3): uploads and
//! downloads are streamed, never buffered, so hundreds of MB pass with
//! constant memory and a slow client only meets the idle timeout, never a
//! total one. Neither side of these tests holds a whole body in memory
//! either: bodies are generated and hashed 64 KiB at a time.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rack_gateway::dev::mock_rack::generated_byte;
use ring::digest::{Context, SHA256};

use crate::support::*;

const CHUNK: usize = 64 << 10;
/// The period of the upload pattern; prime, so no 64 KiB chunk repeats the
/// previous one and a dropped or reordered chunk changes the hash.
const PERIOD: usize = 251;
const MIB: u64 = 1 << 20;
/// Bound on a whole transfer; only there to turn a hang into a failure.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
const UPLOAD: &str = "/racks/staging/apps/myapp/objects/tmp/big.tgz?";

/// One period plus one chunk of `generated_byte`, so the bytes at any
/// offset are a zero-copy slice.
fn table() -> &'static Bytes {
    static TABLE: OnceLock<Bytes> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..(PERIOD + CHUNK) as u64)
            .map(generated_byte)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// The `len` bytes of the pattern starting at `offset`.
fn pattern(offset: u64, len: usize) -> Bytes {
    let start = (offset % PERIOD as u64) as usize;
    table().slice(start..start + len)
}

/// Hex SHA-256 of the first `total` bytes of the pattern, hashed chunk by
/// chunk.
fn pattern_sha256(total: u64) -> String {
    let mut ctx = Context::new(&SHA256);
    let mut offset = 0;
    while offset < total {
        let n = (total - offset).min(CHUNK as u64) as usize;
        ctx.update(&pattern(offset, n));
        offset += n as u64;
    }
    rack_gateway::hex::encode(ctx.finish().as_ref())
}

type Frame = Result<http_body::Frame<Bytes>, Infallible>;
type UploadBody = StreamBody<futures_util::stream::BoxStream<'static, Frame>>;

/// An upload body of `total` pattern bytes generated on the fly. It hashes
/// what it yields into `digest` (set when the last chunk is produced) and
/// sleeps `pause` after each chunk boundary listed in `pause_after`.
fn upload_body(
    total: u64,
    pause_after: Vec<u64>,
    pause: Duration,
    digest: Arc<Mutex<Option<String>>>,
) -> UploadBody {
    struct State {
        offset: u64,
        total: u64,
        ctx: Option<Context>,
        pause_after: Vec<u64>,
        pause: Duration,
        digest: Arc<Mutex<Option<String>>>,
    }
    let state = State {
        offset: 0,
        total,
        ctx: Some(Context::new(&SHA256)),
        pause_after,
        pause,
        digest,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.offset >= s.total {
            return None;
        }
        if s.pause_after.contains(&s.offset) {
            tokio::time::sleep(s.pause).await;
        }
        let n = (s.total - s.offset).min(CHUNK as u64) as usize;
        let chunk = pattern(s.offset, n);
        s.offset += n as u64;
        let ctx = s.ctx.as_mut().expect("hashing until the end");
        ctx.update(&chunk);
        if s.offset == s.total {
            let done = s.ctx.take().expect("finished once").finish();
            *s.digest.lock().unwrap() = Some(rack_gateway::hex::encode(done.as_ref()));
        }
        Some((Ok(http_body::Frame::data(chunk)), s))
    });
    StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, Frame>)
}

/// POSTs a generated body of `total` bytes (with a Content-Length when
/// `sized`, chunked otherwise) and checks the rack received exactly it.
async fn upload(gw: &Gw, total: u64, sized: bool, pause_after: Vec<u64>, pause: Duration) {
    let digest = Arc::new(Mutex::new(None));
    let body = upload_body(total, pause_after, pause, digest.clone());
    let mut req = http::Request::post(gw.url(UPLOAD))
        .header("Authorization", basic(CI_STAGING))
        .header("Accept", "*/*")
        .header("Content-Type", "application/octet-stream");
    if sized {
        req = req.header("Content-Length", total.to_string());
    }
    let req = req.body(body).unwrap();
    let client: Client<_, UploadBody> = Client::builder(TokioExecutor::new()).build_http();
    let resp = tokio::time::timeout(TRANSFER_TIMEOUT, client.request(req))
        .await
        .expect("upload within the transfer timeout")
        .expect("upload succeeds");
    let status = resp.status();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&text));
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(json["Url"], "object://myapp/tmp/big.tgz");

    let sent = digest
        .lock()
        .unwrap()
        .clone()
        .expect("the whole body was sent");
    let rec = gw.staging.last_request().unwrap();
    assert_eq!(rec.target, "/apps/myapp/objects/tmp/big.tgz?");
    assert_eq!(rec.body_len, total);
    assert_eq!(rec.body_sha256, sent);
    assert_eq!(sent, pattern_sha256(total), "the generator itself is sound");
    if !sized {
        // Streamed on: a gateway that buffered could have sent a length.
        assert_eq!(rec.header("content-length"), None);
        assert_eq!(rec.header("transfer-encoding").as_deref(), Some("chunked"));
    }
}

/// A 200 MiB `convox build` source upload with a known length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_200_mib_streams_through() {
    let gw = Gw::start().await;
    let started = Instant::now();
    upload(&gw, 200 * MIB, true, Vec::new(), Duration::ZERO).await;
    eprintln!("200 MiB upload took {:?}", started.elapsed());
}

/// A chunked upload (no Content-Length), as `convox cp` sends files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_chunked_streams_through() {
    let gw = Gw::start().await;
    upload(&gw, 20 * MIB + 12_345, false, Vec::new(), Duration::ZERO).await;
}

/// A 200 MiB download, hashed as it arrives and compared with the rack's
/// pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_200_mib_streams_through() {
    let gw = Gw::start().await;
    let total = 200 * MIB;
    let started = Instant::now();
    let req = http::Request::get(gw.url(&format!(
        "/racks/staging/apps/myapp/objects/generated/{total}?"
    )))
    .header("Authorization", basic(CI_STAGING))
    .header("Accept", "*/*")
    .body(Empty::<Bytes>::new())
    .unwrap();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let hashed = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        let resp = client.request(req).await.expect("download starts");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut ctx = Context::new(&SHA256);
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body streams").into_data() {
                ctx.update(&data);
                len += data.len() as u64;
            }
        }
        (len, rack_gateway::hex::encode(ctx.finish().as_ref()))
    })
    .await
    .expect("download within the transfer timeout");
    eprintln!("200 MiB download took {:?}", started.elapsed());
    assert_eq!(hashed.0, total);
    assert_eq!(hashed.1, pattern_sha256(total));
}

/// A client that stalls mid-body (well inside the idle timeout) still
/// completes: the body is streamed with backpressure, not collected first.
#[tokio::test]
async fn slow_upload_within_idle_timeout_succeeds() {
    let gw = Gw::start_with("timeouts:\n  idle: 10s\n").await;
    let chunk = CHUNK as u64;
    upload(&gw, 4 * MIB, true, vec![2 * MIB], Duration::from_secs(2)).await;
    upload(
        &gw,
        32 * chunk + 7,
        false,
        vec![16 * chunk],
        Duration::from_secs(2),
    )
    .await;
}

/// The idle timeout bounds silence, not the whole transfer: an upload that
/// keeps moving but takes longer in total than the idle timeout succeeds.
#[tokio::test]
async fn upload_longer_than_idle_timeout_succeeds() {
    let gw = Gw::start_with("timeouts:\n  idle: 3s\n").await;
    let chunk = CHUNK as u64;
    let pauses = (1..=6).map(|i| i * chunk).collect();
    upload(&gw, 8 * chunk, true, pauses, Duration::from_secs(1)).await;
}
