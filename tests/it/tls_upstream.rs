//! TLS on both sides of the gateway: the listener terminates TLS with the
//! configured certificate (ALPN `http/1.1`), and each rack's connection is
//! verified the way its config says (a CA bundle, a pinned leaf
//! certificate, an explicit opt-out, or the bundled web roots). A rack that
//! fails verification gets nothing, not even the request line, so the
//! gateway's rack credential never reaches an impostor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rack_gateway::dev::mock_rack::{MockOptions, MockRack};
use rack_gateway::rack::ws::{self, Opcode};
use rack_gateway::server::listener::Running;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::support::*;

/// A test CA and a leaf certificate it issued.
struct Pki {
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl Pki {
    /// A CA plus a server certificate for `names` (IP SANs for addresses).
    fn new(names: &[&str]) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rack-gateway test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf_params = CertificateParams::new(names).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "rack");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            leaf_der: leaf.der().clone(),
            leaf_pem: leaf.pem(),
            key_der: leaf_key.serialize_der(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// The pin the gateway expects: hex SHA-256 of the leaf's DER.
    fn pin(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.leaf_der.as_ref());
        rack_gateway::hex::encode(d.as_ref())
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves the leaf and records the ALPN list of every ClientHello, so the
/// test can see what the gateway offers (rustls would accept a client that
/// offers no ALPN at all, so the negotiated result alone proves little).
#[derive(Debug)]
struct RecordingResolver {
    key: Arc<CertifiedKey>,
    offers: Mutex<Vec<Option<Vec<Vec<u8>>>>>,
}

impl ResolvesServerCert for RecordingResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offer = hello.alpn().map(|it| it.map(<[u8]>::to_vec).collect());
        self.offers.lock().unwrap().push(offer);
        Some(self.key.clone())
    }
}

/// A TLS mock rack presenting `pki`'s leaf, and the ALPN recorder.
async fn tls_mock(pki: &Pki) -> (MockRack, Arc<RecordingResolver>) {
    let key = CertifiedKey::from_der(vec![pki.leaf_der.clone()], pki.key(), &provider()).unwrap();
    let resolver = Arc::new(RecordingResolver {
        key: Arc::new(key),
        offers: Mutex::new(Vec::new()),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let rack = MockRack::start(MockOptions {
        tls: Some(Arc::new(server)),
        ..MockOptions::new(RACK_PASSWORD)
    })
    .await
    .expect("mock rack starts");
    assert!(rack.url().starts_with("https://127.0.0.1:"));
    (rack, resolver)
}

/// A gateway with one rack `secure` at `url`, configured with `tls_yaml`
/// (indented rack keys), and a token for it.
async fn gateway(url: &str, tls_yaml: &str) -> (Running, tempfile::TempDir) {
    init();
    ConfigDir::new()
        .no_rack_discovery()
        .rack("secure", url)
        .extra(tls_yaml)
        .ci(&[("ci", CI_ALL, "admin", "*")])
        .start()
        .await
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn list_apps(gw: &Running) -> Resp {
    get(
        &format!("http://{}/racks/secure/apps?", gw.addr),
        Some(CI_ALL),
    )
    .await
}

/// Every connection the gateway opened offered exactly `http/1.1`: the rack
/// speaks HTTP/1.1 only, and websocket upgrades need it.
fn assert_offered_http11(resolver: &RecordingResolver) {
    let offers = resolver.offers.lock().unwrap();
    assert!(!offers.is_empty(), "the gateway never connected");
    for offer in offers.iter() {
        assert_eq!(offer.as_deref(), Some(&[b"http/1.1".to_vec()][..]));
    }
}

/// The rack received nothing: verification failed before any HTTP.
fn assert_refused_upstream(r: &Resp, rack: &MockRack, resolver: &RecordingResolver) {
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(
        r.error().starts_with("gateway: rack `secure` unavailable"),
        "{}",
        r.text()
    );
    assert!(
        !resolver.offers.lock().unwrap().is_empty(),
        "the TLS handshake was attempted"
    );
    assert!(rack.requests().is_empty(), "{:?}", rack.requests());
    assert!(
        !r.text().contains(RACK_PASSWORD),
        "the rack password leaked"
    );
}

/// `ca_file:` trusts exactly that CA: the rack's leaf it issued for
/// 127.0.0.1 verifies.
#[tokio::test]
async fn upstream_ca_file_verifies() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let files = tempfile::tempdir().unwrap();
    let ca = write(files.path(), "ca.pem", &pki.ca_pem);
    let (gw, _dir) = gateway(&rack.url(), &format!("    ca_file: {}\n", ca.display())).await;
    let r = list_apps(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rack.requests().len(), 1);
    assert_eq!(
        rack.requests()[0].header("authorization"),
        Some(basic(RACK_PASSWORD))
    );
    assert_offered_http11(&resolver);
}

/// A CA bundle doesn't excuse a certificate for another host.
#[tokio::test]
async fn upstream_ca_file_checks_the_host() {
    let pki = Pki::new(&["rack.example.com"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let files = tempfile::tempdir().unwrap();
    let ca = write(files.path(), "ca.pem", &pki.ca_pem);
    let (gw, _dir) = gateway(&rack.url(), &format!("    ca_file: {}\n", ca.display())).await;
    let r = list_apps(&gw).await;
    assert_refused_upstream(&r, &rack, &resolver);
    assert!(r.error().contains("not valid for name"), "{}", r.text());
}

/// `pin_sha256:` accepts the pinned leaf (even without a trusted issuer),
/// for REST and for a websocket upgrade over the same TLS client.
#[tokio::test]
async fn upstream_pin_accepts_the_pinned_leaf() {
    let pki = Pki::new(&["127.0.0.1"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let (gw, _dir) = gateway(&rack.url(), &format!("    pin_sha256: {}\n", pki.pin())).await;
    let r = list_apps(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut c = ws::client_connect(
        gw.addr,
        "/racks/secure/apps/myapp/logs",
        &[("Authorization", &basic(CI_ALL)), ("Follow", "false")],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 101);
    let mut frames = Vec::new();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(15), c.recv())
            .await
            .expect("frame within 15s")
            .expect("read ok");
        match f {
            Some(f) if f.opcode == Opcode::Close => break,
            Some(f) => frames.push(f),
            None => break,
        }
    }
    let text = frames.iter().filter(|f| f.opcode == Opcode::Text).count();
    assert_eq!(text, 3, "{frames:?}");
    assert_eq!(frames.last().map(|f| f.opcode), Some(Opcode::Binary));
    assert_eq!(rack.requests().len(), 2);
    assert_offered_http11(&resolver);
}

/// A pin that doesn't match is a 502 that says so, and the rack gets
/// nothing.
#[tokio::test]
async fn upstream_wrong_pin_is_refused() {
    let pki = Pki::new(&["127.0.0.1"]);
    let other = Pki::new(&["127.0.0.1"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let (gw, _dir) = gateway(&rack.url(), &format!("    pin_sha256: {}\n", other.pin())).await;
    let r = list_apps(&gw).await;
    assert_refused_upstream(&r, &rack, &resolver);
    assert!(
        r.error().contains("does not match pin_sha256"),
        "{}",
        r.text()
    );
}

/// `insecure_skip_verify: true` accepts any certificate, as the stock CLI
/// does.
#[tokio::test]
async fn upstream_insecure_skip_verify_accepts_anything() {
    let pki = Pki::new(&["rack.example.com"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let (gw, _dir) = gateway(&rack.url(), "    insecure_skip_verify: true\n").await;
    let r = list_apps(&gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rack.requests().len(), 1);
    assert_offered_http11(&resolver);
}

/// With no TLS option the rack must chain to the bundled web roots; a
/// private CA does not.
#[tokio::test]
async fn upstream_default_verification_rejects_private_ca() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let (rack, resolver) = tls_mock(&pki).await;
    let (gw, _dir) = gateway(&rack.url(), "").await;
    let r = list_apps(&gw).await;
    assert_refused_upstream(&r, &rack, &resolver);
    assert!(
        r.error().contains("invalid peer certificate"),
        "{}",
        r.text()
    );
}

/// A rustls client trusting `ca_pem`, offering `http/1.1`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The listener serves HTTPS with the configured certificate and
/// negotiates `http/1.1`; plain HTTP on the TLS port gets no HTTP answer.
#[tokio::test]
async fn listener_terminates_tls() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let files = tempfile::tempdir().unwrap();
    let cert = write(files.path(), "cert.pem", &pki.leaf_pem);
    let key = write(files.path(), "key.pem", &pki.key_pem);
    let gw = Gw::start_with(&format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        cert.display(),
        key.display()
    ))
    .await;

    let connector = tokio_rustls::TlsConnector::from(client_config(&pki.ca_pem));
    for name in ["127.0.0.1", "localhost"] {
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        let tls = connector.connect(server_name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/racks/staging/apps?")
            .header("Host", format!("{name}:{}", gw.addr().port()))
            .header("Authorization", basic(CI_STAGING))
            .header("Accept", "*/*")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .expect("response within 30s")
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let apps: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(apps
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "myapp"));
    }
    assert_eq!(gw.staging.requests().len(), 2);

    let (status, text) = raw(
        gw.addr(),
        b"GET /racks/staging/apps? HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 0, "{text:?}");
    assert!(!text.contains("HTTP/1."), "{text:?}");
    assert_eq!(gw.staging.requests().len(), 2);
}
