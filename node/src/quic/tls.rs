//! The node's TLS identity: a self-signed certificate created on first start and kept in the
//! data dir, so clients can trust it once (by file or by pinned fingerprint) and keep trusting
//! it across restarts.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::QuicError;

/// Directory under the data dir that holds the identity.
pub const TLS_DIR: &str = "tls";
/// The certificate, DER encoded (give this file to clients that trust by file).
pub const CERT_FILE: &str = "cert.der";
/// The PKCS#8 private key, DER encoded, readable only by the owner.
pub const KEY_FILE: &str = "key.der";

/// A certificate and its key, as the server presents them.
pub struct Identity {
    /// The self-signed end-entity certificate.
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the certificate DER, lowercase hex (what clients pin).
    pub fingerprint: String,
    /// Where the certificate file is.
    pub cert_path: PathBuf,
}

pub use starling_client::tls::{fingerprint, provider};

/// Loads `data_dir/tls/{cert,key}.der`, or creates them (SAN `localhost`, `127.0.0.1`) when
/// neither exists. A corrupt, mismatched or half-missing pair is an error, never silently
/// replaced: replacing it would change the fingerprint every client pinned.
pub fn load_or_create(data_dir: &Path) -> Result<Identity, QuicError> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QuicError::Io { path, source }
    };
    let (cert, key) = match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert = fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = fs::read(&key_path).map_err(io(&key_path))?;
            (cert, key)
        }
        (false, false) => {
            let made = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .map_err(|e| QuicError::Certificate {
                path: cert_path.clone(),
                message: format!("could not create a certificate: {e}"),
            })?;
            let cert = made.cert.der().to_vec();
            let key = made.signing_key.serialize_der();
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            write_new(&key_path, &key, true).map_err(io(&key_path))?;
            write_new(&cert_path, &cert, false).map_err(io(&cert_path))?;
            tracing::info!(path = %cert_path.display(), fingerprint = %fingerprint(&cert), "created a self-signed TLS certificate");
            (cert, key)
        }
        (true, false) | (false, true) => {
            return Err(QuicError::Certificate {
                path: dir,
                message: format!("only one of {CERT_FILE} and {KEY_FILE} exists"),
            })
        }
    };
    let cert = CertificateDer::from(cert);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    // Parses the key, parses the certificate and checks they belong together.
    rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), &provider())
        .map_err(|e| QuicError::Certificate {
            path: cert_path.clone(),
            message: format!("corrupt or mismatched certificate/key: {e}"),
        })?;
    Ok(Identity {
        fingerprint: fingerprint(&cert),
        cert,
        key,
        cert_path,
    })
}

/// Writes a file through a temporary name, so a crash never leaves half a key behind.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
