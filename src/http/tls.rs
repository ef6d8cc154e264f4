//! TLS termination for the gateway's listener: rustls with the ring
//! provider, certificate chain and key from PEM files, ALPN `http/1.1`.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, ServerTls};

/// Installs ring as the process-wide rustls provider. Called once at the top
/// of `main` (and by tests); a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Loads the certificate chain and key and builds the server config; errors
/// point at the `tls:` block of gateway.yaml.
pub(crate) fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let err = |message: String| ConfigError {
        file: tls.at.clone(),
        line: None,
        column: None,
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|it| it.collect())
        .map_err(|e| err(format!("tls.cert_file {}: {e}", tls.cert_file.display())))?;
    if certs.is_empty() {
        return Err(err(format!(
            "tls.cert_file {} holds no certificate",
            tls.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| err(format!("tls.key_file {}: {e}", tls.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(format!("tls: certificate and key don't fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
