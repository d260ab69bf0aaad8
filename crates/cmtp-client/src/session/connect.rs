//! Opening a verified connection to the home server: OHAI, TLS when offered (and
//! required once seen), the server key against its pin, the dialect downgrade check.

use cmtp_crypto::PublicKey;

use crate::conn::{Connection, Dialect, Timeouts};
use crate::error::{ClientError, Result};
use crate::profile::{Compat, PinStatus, Profile};

/// Connects, reads the greeting, says OHAI, moves to TLS when the server offers it (see
/// [`secure`]), and checks the server key against the pin in `profile` for `server`
/// (pinning it when `pin_new` and nothing is pinned). Returns the connection (with the
/// key set) and how the key compared. A 2016 answer from a server the profile saw speak
/// CMTP/1 is refused (see [`check_downgrade`]).
pub(super) async fn connect_verified(
    profile: &mut Profile,
    server: &str,
    timeouts: Timeouts,
    pin_new: bool,
    allow_2016: bool,
    require_tls: bool,
) -> Result<(Connection, PublicKey, PinStatus)> {
    let conn = Connection::connect(server, timeouts).await?;
    let mut conn = secure(profile, server, conn, require_tls).await?;
    match verify_server(profile, server, &mut conn, pin_new, allow_2016).await {
        Ok((key, status)) => {
            // Recorded once the key is trusted. Login saves the profile itself (only
            // after the password worked); a later session saves the new record here.
            if conn.is_tls() && profile.pins.pin_tls(server) && !pin_new {
                profile.save()?;
            }
            Ok((conn, key, status))
        }
        Err(e) => {
            conn.close(Some(&e)).await;
            Err(e)
        }
    }
}

/// Says OHAI and, when the answer offers TLS, upgrades with TLSSTART (the server's key
/// checked against the pin, or taken on first use and checked by [`verify_server`]
/// against KEYREQUEST and the pin like any first key), then says OHAI again inside.
/// A server recorded as offering TLS that does not (or any, with `require_tls`) is
/// [`ClientError::TlsDowngrade`], before anything else is sent.
pub(super) async fn secure(
    profile: &Profile,
    server: &str,
    mut conn: Connection,
    require_tls: bool,
) -> Result<Connection> {
    let text = match conn.ohai().await {
        Ok(t) => t,
        Err(e) => {
            conn.close(Some(&e)).await;
            return Err(e);
        }
    };
    let offered = conn.dialect() == Dialect::Cmtp1
        && cmtp_proto::reply::ohai_capabilities(&text).contains(&cmtp_proto::reply::CAP_TLS);
    if !offered {
        let why = if require_tls {
            Some(" (--require-tls)")
        } else if conn.dialect() == Dialect::Legacy2016 {
            // The 2016 dialect has no TLS at all: whether a 2016 answer is acceptable is
            // the dialect check's decision ([`check_downgrade`]: only with an explicit
            // `--compat 2016`), which names the downgrade and its remedy.
            None
        } else if profile.pins.tls_seen(server) {
            Some(" although it did before")
        } else {
            None
        };
        if let Some(why) = why {
            let e = ClientError::TlsDowngrade {
                server: server.to_owned(),
                why,
            };
            conn.close(Some(&e)).await;
            return Err(e);
        }
        return Ok(conn);
    }
    let pinned = profile
        .pins
        .servers
        .get(server)
        .and_then(|h| PublicKey::from_hex(h).ok());
    let mut conn = conn.start_tls(pinned).await.map_err(|e| match e {
        ClientError::ServerKeyChanged {
            pinned, presented, ..
        } => ClientError::ServerKeyChanged {
            server: server.to_owned(),
            pinned,
            presented,
        },
        e => e,
    })?;
    if let Err(e) = conn.ohai().await {
        conn.close(Some(&e)).await;
        return Err(e);
    }
    Ok(conn)
}

/// The checks of [`connect_verified`] once connected (and OHAI said, by [`secure`]).
async fn verify_server(
    profile: &mut Profile,
    server: &str,
    conn: &mut Connection,
    pin_new: bool,
    allow_2016: bool,
) -> Result<(PublicKey, PinStatus)> {
    check_downgrade(profile, server, conn, allow_2016)?;
    let key = conn.fetch_server_key().await?;
    // The TLS key and the signing key are one key (D7): anything else is not this server.
    if let Some(tls_key) = conn.tls_key()
        && *tls_key != key
    {
        return Err(ClientError::Protocol {
            step: "comparing the TLS key with the server key",
            peer: conn.peer(),
            detail: format!(
                "TLS presented {}, KEYREQUEST {}",
                tls_key.fingerprint(),
                key.fingerprint()
            ),
        });
    }
    let status = profile.pins.check_server(server, &key);
    match &status {
        PinStatus::Same => {}
        // Pinned in memory only: login saves the profile once the password opened
        // the xzibit, so a failed login leaves nothing behind.
        PinStatus::New if pin_new => profile.pins.pin_server(server, &key),
        PinStatus::New => {
            return Err(ClientError::Profile {
                path: profile.dir().display().to_string(),
                detail: format!("no pinned key for {server}; run `cmtp login` again"),
            });
        }
        PinStatus::Changed(old) => {
            return Err(ClientError::ServerKeyChanged {
                server: server.to_owned(),
                pinned: old.fingerprint(),
                presented: key.fingerprint(),
            });
        }
    }
    conn.set_server_key(key);
    Ok((key, status))
}

/// The dialect comes from the unsigned greeting and OHAI, so anyone on the path can
/// make a CMTP/1 server look like the 2016 one. When the profile recorded CMTP/1 for
/// `server` at login, a 2016 answer is [`ClientError::Downgrade`], unless the person
/// chose the 2016 dialect explicitly (`--compat 2016`).
pub(super) fn check_downgrade(
    profile: &Profile,
    server: &str,
    conn: &Connection,
    allow_2016: bool,
) -> Result<()> {
    let recorded_cmtp1 = profile
        .config
        .as_ref()
        .is_some_and(|c| c.server == server && c.dialect == Some(Compat::Cmtp1));
    if recorded_cmtp1 && conn.dialect() == Dialect::Legacy2016 && !allow_2016 {
        return Err(ClientError::Downgrade {
            server: server.to_owned(),
        });
    }
    Ok(())
}
