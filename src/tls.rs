//! TLS client settings that trust a CA: the CA file an administrator names
//! (PEM), or the system's root store. The vSphere transport and the
//! PostgreSQL catalog both verify their servers this way, on rustls with
//! the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, WantsVerifier};

/// The ring provider with rustls's safe protocol versions, before the
/// choice of how the server is verified.
pub fn builder() -> Result<
    (
        ConfigBuilder<ClientConfig, WantsVerifier>,
        Arc<CryptoProvider>,
    ),
    String,
> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok((builder, provider))
}

/// A client that verifies the server's chain and name against the CA in
/// `ca_file`, or against the system's root store without one.
pub fn trusting(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let (builder, _) = builder()?;
    let (certs, from) = match ca_file {
        Some(path) => (
            CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read CA file `{}`: {e}", path.display()))?,
            format!("`{}`", path.display()),
        ),
        None => (
            rustls_native_certs::load_native_certs().certs,
            "the system's root store".to_string(),
        ),
    };
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("no usable certificate in {from}"));
    }
    Ok(builder.with_root_certificates(store).with_no_client_auth())
}
