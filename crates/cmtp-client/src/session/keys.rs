//! Getting the key pair from the home server with the password: the OPAQUE login
//! (docs/protocol.md D8) when the server offers it, the CMTP/1 LOGIN otherwise; the
//! upgrade of an account to OPAQUE; and the password change.

use cmtp_crypto::{KeyPair, Xzibit};
use cmtp_proto::opaque::CAPABILITY;
use zeroize::Zeroizing;

use crate::address::Address;
use crate::conn::{Connection, OpaqueOutcome};
use crate::error::{ClientError, Result};

use super::Session;

/// The key pair for `address`, with `password`, and whether the account now logs in with
/// OPAQUE on this server.
///
/// - The server offers OPAQUE: OPAQUE login. Refused, and the profile has logged this
///   account in with OPAQUE before (`pinned_opaque`): wrong password, with no LOGIN
///   fallback. Refused otherwise: the account may not have an OPAQUE login yet, so
///   LOGIN (which the server refuses for accounts that have one), and once the password
///   has opened the xzibit, registration (the upgrade), signed by the key just opened.
/// - The server does not offer OPAQUE although the profile pinned it: downgrade,
///   refused before anything is sent.
pub(super) async fn obtain_keys(
    conn: &mut Connection,
    server: &str,
    address: &Address,
    password: &[u8],
    pinned_opaque: bool,
) -> Result<(KeyPair, bool)> {
    if !conn.offers(CAPABILITY) {
        if pinned_opaque {
            return Err(ClientError::OpaqueDowngrade {
                server: server.to_owned(),
            });
        }
        return Ok((fetch_keys(conn, address, password).await?, false));
    }
    match conn.opaque_login(&address.account, password).await? {
        OpaqueOutcome::Done(xzibit) => {
            return Ok((open_checked(conn, address, xzibit, password).await?, true));
        }
        OpaqueOutcome::Refused if pinned_opaque => {
            return Err(ClientError::WrongPassword {
                address: address.to_string(),
            });
        }
        OpaqueOutcome::Refused => {}
    }
    let keys = match fetch_keys(conn, address, password).await {
        Ok(k) => k,
        // LOGIN refused: an upgraded account (whose OPAQUE login just failed, so the
        // password is wrong) or no account at all; the published key tells them apart.
        Err(ClientError::UnknownUser { .. })
            if conn
                .key_request(&address.account, &address.domain)
                .await?
                .is_some() =>
        {
            return Err(ClientError::WrongPassword {
                address: address.to_string(),
            });
        }
        Err(e) => return Err(e),
    };
    let upgraded = conn
        .opaque_register(&address.account, &address.domain, &keys, password, None)
        .await?;
    Ok((keys, matches!(upgraded, OpaqueOutcome::Done(()))))
}

/// Fetches `address`'s xzibit with LOGIN, opens it with `password`, and checks that its
/// public key is the one the server publishes for the same user.
pub(super) async fn fetch_keys(
    conn: &mut Connection,
    address: &Address,
    password: &[u8],
) -> Result<KeyPair> {
    let xz = conn.login(&address.account).await.map_err(|e| match e {
        ClientError::UnknownUser { .. } => ClientError::UnknownUser {
            address: address.to_string(),
        },
        e => e,
    })?;
    open_checked(conn, address, xz, password).await
}

/// Opens an xzibit with `password` and checks its public key against the one the server
/// publishes for the same user.
async fn open_checked(
    conn: &mut Connection,
    address: &Address,
    xzibit: Vec<u8>,
    password: &[u8],
) -> Result<KeyPair> {
    let xz = Xzibit::parse(&xzibit).map_err(|e| ClientError::Protocol {
        step: "reading the xzibit",
        peer: conn.peer(),
        detail: e.to_string(),
    })?;
    let password = Zeroizing::new(password.to_vec());
    // The KDF is deliberately slow (scrypt / Argon2id): keep it off the async threads.
    let keys = tokio::task::spawn_blocking(move || xz.open(&password))
        .await
        .map_err(|e| ClientError::Task {
            what: "password KDF",
            detail: e.to_string(),
        })?
        .map_err(|e| match e {
            cmtp_crypto::CryptoError::WrongPassword => ClientError::WrongPassword {
                address: address.to_string(),
            },
            e => ClientError::Crypto(e),
        })?;
    let published = conn
        .key_request(&address.account, &address.domain)
        .await?
        .ok_or_else(|| ClientError::UnknownUser {
            address: address.to_string(),
        })?;
    if published != keys.public() {
        return Err(ClientError::XzibitKeyMismatch {
            address: address.to_string(),
            xzibit: keys.public().fingerprint(),
            published: published.fingerprint(),
        });
    }
    Ok(keys)
}

impl Session {
    /// Changes the account's password on a server that offers OPAQUE: proves `old` (an
    /// OPAQUE login, or LOGIN for an account not upgraded yet), encrypts the same key
    /// pair in a new version-2 xzibit under `new`, and registers `new` with OPAQUE,
    /// the new xzibit travelling sealed to the server key; both steps are signed by the
    /// user's key. The caller judges the new password's strength first.
    pub async fn change_password(&mut self, old: &[u8], new: &[u8]) -> Result<()> {
        let address = self.address.clone();
        let cfg = self.profile.require_config()?.clone();
        let conn = self.conn().await?;
        if !conn.offers(CAPABILITY) {
            let e = if cfg.opaque {
                ClientError::OpaqueDowngrade { server: cfg.server }
            } else {
                ClientError::Unsupported(
                    "the server does not offer OPAQUE (docs/protocol.md D8): the password \
                     of a CMTP/1 account is changed by the server's administrator"
                        .into(),
                )
            };
            return Err(e);
        }
        let r = obtain_keys(conn, &cfg.server, &address, old, cfg.opaque).await;
        let (keys, _) = self.after(r).await?;
        if keys.public() != self.profile.public_key()? {
            return Err(ClientError::Profile {
                path: self.profile.dir().display().to_string(),
                detail: "the account's key changed since login; run `cmtp login` again".into(),
            });
        }
        let new_pw = Zeroizing::new(new.to_vec());
        let kp = keys.clone();
        // Argon2id (D3): slow by design, off the async threads.
        let xz = tokio::task::spawn_blocking(move || Xzibit::create_v2(&kp, &new_pw))
            .await
            .map_err(|e| ClientError::Task {
                what: "password KDF",
                detail: e.to_string(),
            })??;
        let conn = self.conn().await?;
        let r = conn
            .opaque_register(
                &address.account,
                &address.domain,
                &keys,
                new,
                Some(xz.as_bytes()),
            )
            .await;
        match self.after(r).await? {
            OpaqueOutcome::Done(()) => {}
            OpaqueOutcome::Refused => return Err(ClientError::RegistrationRefused),
        }
        if let Some(c) = self.profile.config.as_mut() {
            c.opaque = true;
        }
        self.profile.save()?;
        self.keys = Some(keys);
        Ok(())
    }
}
