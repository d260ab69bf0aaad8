//! TLS 1.3 authenticated by the server's own Ed25519 key as a raw public key (RFC 7250;
//! docs/protocol.md D7): the key clients already pin and KEYREQUEST returns, so no
//! certificate authority and no second key. rustls 0.23 with the ring provider does all
//! the cryptography; this module only builds the configurations and checks that the
//! key presented is the pinned one.
//!
//! cmtpd builds its acceptor here too ([`server_config`]), so both sides share one
//! definition of the protocol versions, suites and key form.

mod stream;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmtp_crypto::{KeyPair, PublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::{AlwaysResolvesServerRawPublicKeys, NoServerSessionStorage};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};

pub use stream::Stream;

/// Why a client-side handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The configuration could not be built.
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
    /// The server proved a key other than the pinned one.
    #[error("the server presented key {presented}, not the pinned {pinned}")]
    KeyMismatch {
        /// The pin's fingerprint.
        pinned: String,
        /// The presented key's fingerprint.
        presented: String,
    },
    /// The handshake did not finish within the time given.
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    /// Any other failure (rustls' words, or the socket's).
    #[error("{0}")]
    Failed(String),
}

/// The client side of a TLS handshake on `tcp`, within `timeout`: the server must prove
/// `expected` (or, when `None`, any Ed25519 key, returned for the caller to pin or
/// compare). Returns the encrypted stream and the key the server proved.
pub async fn handshake(
    tcp: tokio::net::TcpStream,
    expected: Option<PublicKey>,
    timeout: Duration,
) -> Result<(Stream, PublicKey), HandshakeError> {
    let (config, check) = client_config(expected)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let result = tokio::time::timeout(timeout, connector.connect(server_name(), tcp)).await;
    let presented = check.presented();
    let stream = match result {
        Err(_) => return Err(HandshakeError::Timeout(timeout)),
        Ok(Err(e)) => {
            return Err(match (expected, presented) {
                (Some(pinned), Some(key)) if pinned != key => HandshakeError::KeyMismatch {
                    pinned: pinned.fingerprint(),
                    presented: key.fingerprint(),
                },
                _ => HandshakeError::Failed(e.to_string()),
            });
        }
        Ok(Ok(s)) => s,
    };
    let key = presented.ok_or_else(|| HandshakeError::Failed("no server key".into()))?;
    Ok((Stream::Tls(Box::new(stream)), key))
}

/// The TLS configuration could not be built (a key rustls refuses, an unusable provider).
#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: TLS 1.3 only, no client authentication, the server key `kp` as
/// its only raw public key. No session resumption (no tickets, no session cache):
/// every connection proves the key afresh, and nothing per client is kept in memory.
pub fn server_config(kp: &KeyPair) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider();
    let pkcs8 = kp.to_pkcs8_der();
    let signing =
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(pkcs8.as_slice()))?;
    let spki = kp.public().to_spki_der();
    let certified = CertifiedKey::new(vec![CertificateDer::from(spki.to_vec())], signing);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(Arc::new(
            certified,
        ))));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client side: TLS 1.3 only, raw public keys only, and the server's key must be
/// `expected` (the pin) when given; without a pin any Ed25519 key that proves itself in
/// the handshake is accepted (trust on first use: the caller pins
/// [`KeyCheck::presented`] the same way it pins a first KEYREQUEST answer).
pub fn client_config(
    expected: Option<PublicKey>,
) -> Result<(Arc<ClientConfig>, KeyCheck), TlsSetupError> {
    let provider = provider();
    let check = KeyCheck::default();
    let verifier = Arc::new(RawKeyVerifier {
        expected,
        presented: check.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // The server is identified by its key, not a name: sending SNI would only tell the
    // network which host is asked for.
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), check))
}

/// The name rustls needs for a connection; never sent (no SNI) and never checked (the
/// raw key is what is verified).
pub fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// The key the server presented in a handshake (set even when it was refused, so the
/// caller can tell "a different key" from "no TLS at all").
#[derive(Debug, Clone, Default)]
pub struct KeyCheck(Arc<Mutex<Option<PublicKey>>>);

impl KeyCheck {
    /// The Ed25519 key of the server's raw public key, once the handshake got that far.
    pub fn presented(&self) -> Option<PublicKey> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, key: PublicKey) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }
}

/// Checks the raw public key against the pin; rustls then checks the handshake
/// signature with it ([`rustls::crypto::verify_tls13_signature_with_raw_key`]).
#[derive(Debug)]
struct RawKeyVerifier {
    expected: Option<PublicKey>,
    presented: KeyCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for RawKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = PublicKey::from_spki_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        self.presented.set(key);
        match self.expected {
            Some(pinned) if pinned != key => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled; rustls never gets here.
        Err(rustls::Error::General("TLS 1.2 is not enabled".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DER forms cmtp-crypto builds are what rustls (ring) parses: the PKCS#8 seed
    /// gives a signing key whose public half is the SPKI of the same libsodium key.
    #[test]
    fn rustls_takes_the_libsodium_key() {
        let kp = KeyPair::generate().unwrap();
        let pkcs8 = kp.to_pkcs8_der();
        let signing =
            rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(&pkcs8[..]))
                .unwrap();
        let spki = signing.public_key().expect("ed25519 has an SPKI");
        assert_eq!(spki.as_ref(), &kp.public().to_spki_der()[..]);
        assert_eq!(
            PublicKey::from_spki_der(spki.as_ref()).unwrap(),
            kp.public()
        );
        // And a signature made by rustls verifies with libsodium.
        let signer = signing.choose_scheme(&[SignatureScheme::ED25519]).unwrap();
        let sig = signer.sign(b"bound to the server key").unwrap();
        kp.public()
            .verify(
                b"bound to the server key",
                &cmtp_crypto::Signature::from_bytes(&sig).unwrap(),
            )
            .unwrap();
        assert!(server_config(&kp).is_ok());
    }
}
