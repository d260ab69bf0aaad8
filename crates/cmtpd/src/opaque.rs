//! What the server stores of an OPAQUE login (docs/protocol.md D8), and the local
//! registration `cmtpd user add` performs.
//!
//! The store keeps one opaque blob per account (`UserStore::opaque_login`):
//! `u64 registered | record(192)`, `registered` being the timestamp of the
//! registration that wrote it (Unix seconds): a later OPAQUEREG2 must carry a larger
//! one, so a captured registration cannot be replayed to undo a password change.

use cmtp_crypto::opaque::{self, ClientRegistrationState, ServerSetup};

/// A stored OPAQUE login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLogin {
    /// When it was registered (the signed timestamp of its OPAQUEREG2, or the time of
    /// `user add`), Unix seconds.
    pub registered: u64,
    /// The OPAQUE registration record.
    pub record: Vec<u8>,
}

impl StoredLogin {
    /// The bytes kept in the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.record.len());
        b.extend_from_slice(&self.registered.to_be_bytes());
        b.extend_from_slice(&self.record);
        b
    }

    /// Reads stored bytes; `None` if they are not a login of this format.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != 8 + opaque::RECORD_LEN {
            return None;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        opaque::check_record(&b[8..]).ok()?;
        Some(Self {
            registered: u64::from_be_bytes(t),
            record: b[8..].to_vec(),
        })
    }
}

/// Runs both sides of an OPAQUE registration in this process (the admin tool knows the
/// password): the stored login for `account`, registered at `now`.
pub fn register_locally(
    setup: &ServerSetup,
    account: &str,
    password: &[u8],
    now: u64,
) -> Result<StoredLogin, cmtp_crypto::CryptoError> {
    let (state, request) = ClientRegistrationState::start(password)?;
    let response = setup.registration_response(&request, account.as_bytes())?;
    let record = state.finish(password, &response)?;
    Ok(StoredLogin {
        registered: now,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_login_round_trips_and_refuses_garbage() {
        let setup = ServerSetup::generate();
        let l = register_locally(&setup, "alice", b"pw", 42).unwrap();
        assert_eq!(StoredLogin::parse(&l.to_bytes()), Some(l.clone()));
        assert_eq!(StoredLogin::parse(&l.to_bytes()[1..]), None);
        assert_eq!(StoredLogin::parse(b""), None);
    }
}
