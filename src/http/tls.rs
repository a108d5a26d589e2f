//! Optional TLS on the callback port (rustls with the ring provider), for
//! deployments without a TLS-terminating ingress.

use std::sync::Arc;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

use crate::config::TlsFiles;

/// Loads the certificate chain and key; fails with the file and the reason.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read BRIDGE_TLS_CERT_FILE={}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("BRIDGE_TLS_CERT_FILE={} is not PEM", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "BRIDGE_TLS_CERT_FILE={} holds no certificate",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "BRIDGE_TLS_KEY_FILE={} holds no PEM private key",
            files.key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
