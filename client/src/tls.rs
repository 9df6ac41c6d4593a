//! What both ends of a Starling QUIC connection agree on for TLS: the crypto provider and the
//! certificate fingerprint clients pin.

use std::sync::Arc;

use sha2::{Digest, Sha256};

/// SHA-256 of a certificate's DER bytes as lowercase hex: the value clients pin.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The ring crypto provider. Both sides name it explicitly so that a second provider compiled
/// into the binary (aws-lc-rs) can never make rustls panic at run time.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
