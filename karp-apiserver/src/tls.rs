//! A TLS identity made for one run of the server: a self-signed certificate for the names the
//! server answers to, and the rustls configuration that serves it. kubectl sends a bearer token
//! only over TLS, so `karp cluster` serves HTTPS with this and writes the certificate into the
//! kubeconfig as its certificate authority.

use std::sync::Arc;

/// A certificate, its key, and a rustls server configuration presenting them.
#[derive(Clone)]
pub struct Identity {
    /// The certificate in PEM (what clients trust).
    pub cert_pem: String,
    /// The server configuration.
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// Makes a self-signed identity for `names` (DNS names or IP addresses).
///
/// # Errors
/// A message when the key or certificate cannot be generated.
pub fn self_signed(names: &[String]) -> Result<Identity, String> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("generating a certificate: {e}"))?;
    let cert_pem = certified.cert.pem();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der())
        .map_err(|e| format!("encoding the key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("configuring TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("configuring TLS: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        cert_pem,
        server: Arc::new(server),
    })
}
