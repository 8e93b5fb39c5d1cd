//! The TLS listener's certificate (`DZDESK_TLS_CERT`, `DZDESK_TLS_KEY`):
//! read from PEM files at start-up, where a bad or missing file stops the
//! service with one line naming it, and again on SIGHUP, so that a renewed
//! certificate is served without a restart. A reload that fails keeps the
//! certificate in use and says why in the log.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsFiles};

/// rustls' aws-lc-rs provider: the one the tree already builds for ES256.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads the certificate chain and its key, and checks that they belong
/// together. Errors name the variable and the file.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, ConfigError> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        ConfigError::new(
            "DZDESK_TLS_KEY",
            format!("cannot read a private key from {}: {e}", shown(&files.key)),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        ConfigError::new(
            "DZDESK_TLS_KEY",
            format!(
                "the key in {} cannot serve the certificate in {}: {e}",
                shown(&files.key),
                shown(&files.cert)
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ConfigError::new(
            "DZDESK_TLS_CERT",
            format!("cannot read certificates from {}: {e}", shown(path)),
        )
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if chain.is_empty() {
        return Err(unreadable(&"no CERTIFICATE section in the file"));
    }
    Ok(chain)
}

fn shown(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The certificate rustls serves, swapped in place by [`CertReloader::reload`].
#[derive(Debug)]
pub struct CertReloader {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertReloader {
    /// Reads the files now (see [`load`]).
    pub fn new(files: TlsFiles) -> Result<Arc<Self>, ConfigError> {
        let current = RwLock::new(load(&files)?);
        Ok(Arc::new(Self { files, current }))
    }

    /// Re-reads the files. On an error the certificate in use stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let fresh = load(&self.files)?;
        match self.current.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// The rustls configuration of the listener: TLS 1.2 and 1.3 with
    /// rustls' safe defaults, no client certificates, this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, ConfigError> {
        Ok(rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("DZDESK_TLS_CERT", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone()))
    }

    /// Reloads on every SIGHUP in `hangups` (watched since the service was
    /// built: one sent early is not fatal), until dropped.
    pub async fn reload_on_sighup(self: Arc<Self>, mut hangups: tokio::signal::unix::Signal) {
        while hangups.recv().await.is_some() {
            match self.reload() {
                Ok(()) => log::info!(
                    "SIGHUP: TLS certificate reloaded from {}",
                    shown(&self.files.cert)
                ),
                Err(e) => log::error!("SIGHUP: TLS certificate kept, the new one is unusable: {e}"),
            }
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}
