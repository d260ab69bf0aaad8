//! OPAQUE (RFC 9807) for the password login of docs/protocol.md D8, over `opaque-ke`
//! 4.0, and the release of the xzibit under the OPAQUE session key (libsodium).
//!
//! The ciphersuite is fixed here and in D8 byte for byte (a browser client must match
//! it): OPRF ristretto255-SHA512, 3DH over ristretto255 with SHA-512, and Argon2id
//! v1.3 as the key stretching function with m = 65536 KiB, t = 3, p = 4 (RFC 9106 §4,
//! its second recommended option), over `opaque-ke`'s fixed 16 zero bytes of salt.
//! The OPAQUE context string is [`CONTEXT`]; the identities are the defaults of RFC 9807
//! §4.1.2 (both parties' public keys), the account name being the credential identifier.
//!
//! Nothing here is new cryptography: `opaque-ke` runs the protocol, and the xzibit is
//! released as libsodium's `crypto_aead_xchacha20poly1305_ietf` under a key derived
//! from the session key with keyed BLAKE2b (`crypto_generichash`), see [`seal_xzibit`].

use libsodium_rs::crypto_aead::xchacha20poly1305;
use libsodium_rs::crypto_generichash;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse, ServerLogin,
    ServerLoginParameters, ServerRegistration,
};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::{CryptoError, Result};

/// The OPAQUE ciphersuite of D8.
#[derive(Debug, Clone, Copy)]
pub struct Suite;

impl opaque_ke::CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = argon2::Argon2<'static>;
}

/// Argon2id memory cost of the KSF, KiB (64 MiB).
pub const KSF_M_COST_KIB: u32 = 65_536;
/// Argon2id passes of the KSF.
pub const KSF_T_COST: u32 = 3;
/// Argon2id lanes of the KSF.
pub const KSF_P_COST: u32 = 4;
/// The OPAQUE context (RFC 9807 §6.1), the same on both sides.
pub const CONTEXT: &[u8] = b"CMTP/1 OPAQUE D8";

/// KE1 (`CredentialRequest`): blinded element 32, client nonce 32, client key share 32.
pub const KE1_LEN: usize = 96;
/// KE2 (`CredentialResponse`): evaluated element 32, masking nonce 32, masked response
/// 128 (server public key 32, envelope nonce 32, envelope MAC 64), server nonce 32,
/// server key share 32, server MAC 64.
pub const KE2_LEN: usize = 320;
/// KE3 (`CredentialFinalization`): the client MAC.
pub const KE3_LEN: usize = 64;
/// `RegistrationRequest`: the blinded element.
pub const REG_REQUEST_LEN: usize = 32;
/// `RegistrationResponse`: evaluated element 32, server public key 32.
pub const REG_RESPONSE_LEN: usize = 64;
/// `RegistrationUpload` (the record the server stores): client public key 32, masking
/// key 64, envelope (nonce 32, MAC 64).
pub const RECORD_LEN: usize = 192;
/// Length of the serialized server setup: OPRF seed 64, key pair's secret 32, the
/// public key of the fake records 32 (`opaque-ke` layout).
pub const SETUP_LEN: usize = 128;

/// Nonce length of the released xzibit (XChaCha20-Poly1305-IETF).
pub const RELEASE_NONCE_LEN: usize = 24;
/// Bytes a released xzibit adds to the xzibit: nonce and tag.
pub const RELEASE_OVERHEAD: usize = RELEASE_NONCE_LEN + 16;
/// The BLAKE2b message that derives the release key from the session key.
const RELEASE_LABEL: &[u8] = b"CMTP/1 OPAQUE xzibit release key";
/// Additional data of the release AEAD.
const RELEASE_AD: &[u8] = b"CMTP/1 OPAQUE2 xzibit";

/// The Argon2id instance of the KSF (the parameters above).
fn ksf() -> Result<argon2::Argon2<'static>> {
    let params = argon2::Params::new(KSF_M_COST_KIB, KSF_T_COST, KSF_P_COST, None)
        .map_err(|_| CryptoError::Sodium("argon2 parameters"))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

fn malformed(what: &'static str) -> impl Fn(opaque_ke::errors::ProtocolError) -> CryptoError {
    move |_| CryptoError::Malformed(what)
}

fn server_params() -> ServerLoginParameters<'static, 'static> {
    ServerLoginParameters {
        context: Some(CONTEXT),
        identifiers: Identifiers::default(),
    }
}

/// The server's OPAQUE secrets (RFC 9807 §5.1.1 `ServerSetup`): the OPRF seed, the
/// server's AKE key pair and the key that fake records use. Its bytes are secret:
/// kept 0600 in the data directory, never logged (Debug shows nothing).
pub struct ServerSetup(opaque_ke::ServerSetup<Suite>);

impl std::fmt::Debug for ServerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSetup { .. }")
    }
}

/// What a server keeps between KE2 and KE3 of one login (per connection).
pub struct ServerLoginState(ServerLogin<Suite>);

impl std::fmt::Debug for ServerLoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerLoginState { .. }")
    }
}

/// The OPAQUE session key (64 bytes), wiped on drop.
pub struct SessionKey(Zeroizing<[u8; 64]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey { .. }")
    }
}

impl SessionKey {
    /// A session key from its 64 bytes (what both ends of a login computed; tests use
    /// it to show that other bytes do not open a release).
    pub fn from_bytes(out: &[u8]) -> Result<Self> {
        let mut k = Zeroizing::new([0u8; 64]);
        if out.len() != 64 {
            return Err(CryptoError::BadLength {
                what: "session key",
                len: out.len(),
            });
        }
        k.copy_from_slice(out);
        Ok(Self(k))
    }

    /// The 32-byte release key: keyed BLAKE2b of a fixed label under the session key.
    fn release_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        crate::init()?;
        crypto_generichash::generichash(RELEASE_LABEL, Some(&self.0[..]), 32)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Sodium("crypto_generichash"))
    }
}

impl ServerSetup {
    /// Fresh secrets from the OS random generator.
    pub fn generate() -> Self {
        Self(opaque_ke::ServerSetup::<Suite>::new(&mut OsRng))
    }

    /// Reads the serialized form ([`ServerSetup::to_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SETUP_LEN {
            return Err(CryptoError::BadLength {
                what: "OPAQUE server setup",
                len: bytes.len(),
            });
        }
        opaque_ke::ServerSetup::<Suite>::deserialize(bytes)
            .map(Self)
            .map_err(|_| CryptoError::Malformed("OPAQUE server setup"))
    }

    /// The serialized secrets, wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Answers a registration request for the account `credential_id` (RFC 9807 §5.2.2).
    pub fn registration_response(&self, request: &[u8], credential_id: &[u8]) -> Result<Vec<u8>> {
        let req = RegistrationRequest::<Suite>::deserialize(request)
            .map_err(malformed("OPAQUE registration request"))?;
        let res = ServerRegistration::<Suite>::start(&self.0, req, credential_id)
            .map_err(malformed("OPAQUE registration request"))?;
        Ok(res.message.serialize().to_vec())
    }

    /// Starts a login (RFC 9807 §6.3.2): KE2 and the state that checks KE3. With no
    /// record (unknown account, or one not yet registered) `opaque-ke` builds a fake
    /// record from the setup and `credential_id`, so the answer has the same shape and
    /// nearly the same cost, and is the same fake each time for one name.
    pub fn login_start(
        &self,
        record: Option<&[u8]>,
        ke1: &[u8],
        credential_id: &[u8],
    ) -> Result<(Vec<u8>, ServerLoginState)> {
        let file = match record {
            Some(r) => Some(
                ServerRegistration::<Suite>::deserialize(r).map_err(malformed("OPAQUE record"))?,
            ),
            None => None,
        };
        let req = CredentialRequest::<Suite>::deserialize(ke1).map_err(malformed("OPAQUE KE1"))?;
        let res = ServerLogin::start(
            &mut OsRng,
            &self.0,
            file,
            req,
            credential_id,
            server_params(),
        )
        .map_err(malformed("OPAQUE KE1"))?;
        Ok((
            res.message.serialize().to_vec(),
            ServerLoginState(res.state),
        ))
    }
}

impl ServerLoginState {
    /// Checks KE3: the session key when the client proved the password, else
    /// [`CryptoError::WrongPassword`].
    pub fn finish(self, ke3: &[u8]) -> Result<SessionKey> {
        let fin =
            CredentialFinalization::<Suite>::deserialize(ke3).map_err(malformed("OPAQUE KE3"))?;
        let res = self
            .0
            .finish(fin, server_params())
            .map_err(|_| CryptoError::WrongPassword)?;
        SessionKey::from_bytes(&res.session_key)
    }
}

/// Checks that bytes are a well-formed registration record (before storing them).
pub fn check_record(record: &[u8]) -> Result<()> {
    if record.len() != RECORD_LEN {
        return Err(CryptoError::BadLength {
            what: "OPAQUE record",
            len: record.len(),
        });
    }
    ServerRegistration::<Suite>::deserialize(record)
        .map(|_| ())
        .map_err(malformed("OPAQUE record"))
}

/// A client's registration in progress (RFC 9807 §5.2.1).
pub struct ClientRegistrationState(ClientRegistration<Suite>);

impl std::fmt::Debug for ClientRegistrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRegistrationState { .. }")
    }
}

impl ClientRegistrationState {
    /// Blinds the password: the state and the request to send.
    pub fn start(password: &[u8]) -> Result<(Self, Vec<u8>)> {
        let res = ClientRegistration::<Suite>::start(&mut OsRng, password)
            .map_err(|_| CryptoError::Sodium("OPAQUE registration start"))?;
        Ok((Self(res.state), res.message.serialize().to_vec()))
    }

    /// Finishes with the server's response: the record to upload. Runs the KSF.
    pub fn finish(self, password: &[u8], response: &[u8]) -> Result<Vec<u8>> {
        let resp = RegistrationResponse::<Suite>::deserialize(response)
            .map_err(malformed("OPAQUE registration response"))?;
        let ksf = ksf()?;
        let params = ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf));
        let res = self
            .0
            .finish(&mut OsRng, password, resp, params)
            .map_err(malformed("OPAQUE registration response"))?;
        Ok(res.message.serialize().to_vec())
    }
}

/// A client's login in progress (RFC 9807 §6.3.1).
pub struct ClientLoginState(ClientLogin<Suite>);

impl std::fmt::Debug for ClientLoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientLoginState { .. }")
    }
}

impl ClientLoginState {
    /// Blinds the password: the state and KE1.
    pub fn start(password: &[u8]) -> Result<(Self, Vec<u8>)> {
        let res = ClientLogin::<Suite>::start(&mut OsRng, password)
            .map_err(|_| CryptoError::Sodium("OPAQUE login start"))?;
        Ok((Self(res.state), res.message.serialize().to_vec()))
    }

    /// Finishes with KE2: KE3 and the session key, or [`CryptoError::WrongPassword`]
    /// when the envelope does not open (wrong password, no such account, or a server
    /// that is not the one the record was made with). Runs the KSF.
    pub fn finish(self, password: &[u8], ke2: &[u8]) -> Result<(Vec<u8>, SessionKey)> {
        let resp =
            CredentialResponse::<Suite>::deserialize(ke2).map_err(malformed("OPAQUE KE2"))?;
        let ksf = ksf()?;
        let params =
            ClientLoginFinishParameters::new(Some(CONTEXT), Identifiers::default(), Some(&ksf));
        let res = self
            .0
            .finish(&mut OsRng, password, resp, params)
            .map_err(|e| match e {
                opaque_ke::errors::ProtocolError::InvalidLoginError => CryptoError::WrongPassword,
                _ => CryptoError::Malformed("OPAQUE KE2"),
            })?;
        Ok((
            res.message.serialize().to_vec(),
            SessionKey::from_bytes(&res.session_key)?,
        ))
    }
}

/// Encrypts an xzibit for the client of this session: `nonce(24) || ciphertext`,
/// `crypto_aead_xchacha20poly1305_ietf` with a random nonce, under
/// `crypto_generichash(32, "CMTP/1 OPAQUE xzibit release key", key = session_key)`.
/// Only the two ends of a successful OPAQUE login know the session key.
pub fn seal_xzibit(session: &SessionKey, xzibit: &[u8]) -> Result<Vec<u8>> {
    let key = session.release_key()?;
    let key = xchacha20poly1305::Key::from_bytes(&key[..])
        .map_err(|_| CryptoError::Sodium("xchacha20poly1305 key"))?;
    let mut nonce = [0u8; RELEASE_NONCE_LEN];
    crate::random_bytes(&mut nonce)?;
    let ct = xchacha20poly1305::encrypt(
        xzibit,
        Some(RELEASE_AD),
        &xchacha20poly1305::Nonce::from_bytes(nonce),
        &key,
    )
    .map_err(|_| CryptoError::Sodium("xchacha20poly1305 encrypt"))?;
    let mut out = Vec::with_capacity(RELEASE_NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what [`seal_xzibit`] made: the xzibit, or [`CryptoError::DecryptFailed`].
pub fn open_xzibit(session: &SessionKey, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < RELEASE_OVERHEAD {
        return Err(CryptoError::BadLength {
            what: "released xzibit",
            len: sealed.len(),
        });
    }
    let key = session.release_key()?;
    let key = xchacha20poly1305::Key::from_bytes(&key[..])
        .map_err(|_| CryptoError::Sodium("xchacha20poly1305 key"))?;
    let mut nonce = [0u8; RELEASE_NONCE_LEN];
    nonce.copy_from_slice(&sealed[..RELEASE_NONCE_LEN]);
    xchacha20poly1305::decrypt(
        &sealed[RELEASE_NONCE_LEN..],
        Some(RELEASE_AD),
        &xchacha20poly1305::Nonce::from_bytes(nonce),
        &key,
    )
    .map_err(|_| CryptoError::DecryptFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(setup: &ServerSetup, pw: &[u8], id: &[u8]) -> Vec<u8> {
        let (st, req) = ClientRegistrationState::start(pw).unwrap();
        assert_eq!(req.len(), REG_REQUEST_LEN);
        let resp = setup.registration_response(&req, id).unwrap();
        assert_eq!(resp.len(), REG_RESPONSE_LEN);
        let rec = st.finish(pw, &resp).unwrap();
        assert_eq!(rec.len(), RECORD_LEN);
        check_record(&rec).unwrap();
        rec
    }

    #[test]
    fn login_releases_the_xzibit_only_with_the_password() {
        let setup = ServerSetup::from_bytes(&ServerSetup::generate().to_bytes()).unwrap();
        assert_eq!(setup.to_bytes().len(), SETUP_LEN);
        let rec = register(&setup, b"right horse", b"alice");

        let (st, ke1) = ClientLoginState::start(b"right horse").unwrap();
        assert_eq!(ke1.len(), KE1_LEN);
        let (ke2, sst) = setup.login_start(Some(&rec), &ke1, b"alice").unwrap();
        assert_eq!(ke2.len(), KE2_LEN);
        let (ke3, ck) = st.finish(b"right horse", &ke2).unwrap();
        assert_eq!(ke3.len(), KE3_LEN);
        let sk = sst.finish(&ke3).unwrap();
        let sealed = seal_xzibit(&sk, b"the xzibit").unwrap();
        assert_eq!(sealed.len(), 10 + RELEASE_OVERHEAD);
        assert_eq!(open_xzibit(&ck, &sealed).unwrap(), b"the xzibit");

        // A wrong password: the client cannot open the envelope, so has no KE3.
        let (st, ke1) = ClientLoginState::start(b"wrong horse").unwrap();
        let (ke2, _) = setup.login_start(Some(&rec), &ke1, b"alice").unwrap();
        assert_eq!(
            st.finish(b"wrong horse", &ke2).unwrap_err(),
            CryptoError::WrongPassword
        );
    }

    #[test]
    fn unknown_account_gets_a_fake_of_the_same_shape() {
        let setup = ServerSetup::generate();
        let (st, ke1) = ClientLoginState::start(b"pw").unwrap();
        let (ke2, sst) = setup.login_start(None, &ke1, b"nobody").unwrap();
        assert_eq!(ke2.len(), KE2_LEN);
        assert_eq!(
            st.finish(b"pw", &ke2).unwrap_err(),
            CryptoError::WrongPassword
        );
        // A KE3 made up by an attacker is refused.
        assert_eq!(
            sst.finish(&[7u8; KE3_LEN]).unwrap_err(),
            CryptoError::WrongPassword
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let setup = ServerSetup::generate();
        assert!(ServerSetup::from_bytes(&[0u8; 5]).is_err());
        assert!(setup.login_start(None, &[0xffu8; KE1_LEN], b"x").is_err());
        assert!(setup.login_start(None, &[1u8; 3], b"x").is_err());
        assert!(setup.registration_response(&[0xffu8; 32], b"x").is_err());
        assert!(check_record(&[0u8; RECORD_LEN]).is_err() || check_record(&[0u8; 10]).is_err());
        let (st, _) = ClientLoginState::start(b"pw").unwrap();
        assert!(st.finish(b"pw", &[0u8; 7]).is_err());
        let sk = SessionKey::from_bytes(&[1u8; 64]).unwrap();
        assert!(open_xzibit(&sk, &[0u8; 10]).is_err());
        let other = SessionKey::from_bytes(&[2u8; 64]).unwrap();
        let sealed = seal_xzibit(&sk, b"x").unwrap();
        assert_eq!(
            open_xzibit(&other, &sealed).unwrap_err(),
            CryptoError::DecryptFailed
        );
    }
}
