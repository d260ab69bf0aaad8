//! The high-level client: log in, look up keys, send, list, read and delete mail.
//! The `cmtp` binary is a thin layer over this; a webmail can use it the same way.
//! Logging in and opening live here; sending in `send`, the mailbox in `mailbox`.

mod connect;
mod keys;
mod mailbox;
mod send;

use keys::obtain_keys;

use std::net::SocketAddr;
use std::time::Duration;

use crate::unix_now;

use cmtp_crypto::{KeyPair, PublicKey};
use cmtp_proto::{Body, FetchPart, InternalBody, MboxKind, MboxRequest, SubmitRequest};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::conn::{
    Connection, Dialect, MailHead, MailOutcome, Progress, Timeouts, sign_mbox, sign_submit,
    submit_digest,
};
use crate::discovery::Discovery;
use crate::error::{ClientError, ErrorKind, Result};
use crate::message::{
    Draft, InboxItem, ReadMessage, ReceivedAttachment, log_entries, parse_stored,
};
use crate::profile::{Compat, PinStatus, Profile, ProfileConfig, TimeoutConfig};
use connect::{check_downgrade, connect_verified, secure};

/// Settings that are not part of the profile (command-line flags, environment).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Overrides the profile's timeouts.
    pub timeouts: Option<Timeouts>,
    /// DNS server to use instead of the system's (e.g. `127.0.0.1:5353` in tests).
    pub dns: Option<SocketAddr>,
    /// Overrides the profile's compatibility setting (`Legacy2016` allows sending to a
    /// 2016 server; the dialect itself is always detected from the greeting).
    pub compat: Option<Compat>,
    /// Largest message this client sends (bytes); `None` = 64 MiB, the server default.
    pub max_message: Option<u64>,
    /// Refuse a server that does not offer TLS (`--require-tls`). Without it TLS is
    /// still used whenever offered, and required of a server once seen offering it.
    pub require_tls: bool,
}

/// The default largest message (the server's default limit, spec §5.5).
pub const DEFAULT_MAX_MESSAGE: u64 = 64 * 1024 * 1024;

/// How many messages [`Session::inbox`] lists by default (the newest ones).
pub const DEFAULT_INBOX_LIMIT: usize = 50;

/// Overall deadline of [`Session::inbox`] (list plus one `head` fetch per message), at
/// least twice the per-step timeout: each step has its own timeout, but a server that
/// answers slowly, step after step, must not hold the listing forever.
pub const DEFAULT_INBOX_DEADLINE: Duration = Duration::from_secs(120);

/// What `login` established.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    /// The address logged in.
    pub address: Address,
    /// The home server, `host:port`.
    pub server: String,
    /// The server's key.
    pub server_key: PublicKey,
    /// Whether the server key was pinned just now (first use) or matched the pin.
    pub server_key_status: PinStatus,
    /// My public key.
    pub public_key: PublicKey,
    /// The server dialect.
    pub dialect: Dialect,
    /// Whether the secret key was stored in the profile (`--remember`).
    pub remembered: bool,
}

/// A recipient's key as the home server reports it, and how it compares with the pin.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// The address.
    pub address: Address,
    /// The key (verified against the server's signature).
    pub key: PublicKey,
    /// Compared with the pin.
    pub status: PinStatus,
}

/// The result of sending to one recipient.
#[derive(Debug)]
pub struct RecipientResult {
    /// The recipient.
    pub address: Address,
    /// `cc` if this recipient was a carbon copy.
    pub cc: bool,
    /// What happened.
    pub outcome: Result<MailOutcome>,
}

/// A connection to the home server on behalf of one profile.
pub struct Session {
    profile: Profile,
    address: Address,
    conn: Option<Connection>,
    keys: Option<KeyPair>,
    timeouts: Timeouts,
    dialect: Dialect,
    allow_2016_mail: bool,
    require_tls: bool,
    max_message: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("address", &self.address)
            .field("unlocked", &self.keys.is_some())
            .finish()
    }
}

/// Finds the CMTP servers of `domain` by DNS (SRV, then MX on port 25), as `host:port`.
pub async fn discover(domain: &str, opts: &ClientOptions) -> Result<Vec<String>> {
    let t = opts.timeouts.unwrap_or_default();
    let d = Discovery::new(opts.dns, t.connect)?;
    Ok(d.lookup(domain)
        .await?
        .into_iter()
        .map(|c| c.host_port())
        .collect())
}

/// Normalises a fingerprint or hex key for comparison: lower-case hex digits only.
fn norm_hex(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Session {
    /// Logs in: finds the server (`server`, else DNS), pins its key on first use
    /// (a changed key is [`ClientError::ServerKeyChanged`]), fetches and opens the
    /// xzibit with `password`, checks it against the published key, and writes the
    /// profile. With `remember`, the secret key is stored in the profile (mode 0600).
    ///
    /// Nothing is written, and `profile` is unchanged, unless the login succeeds: a
    /// wrong password, an unknown user or an unreachable server leaves no half-made
    /// profile folder behind.
    pub async fn login(
        profile: &mut Profile,
        address: &Address,
        server: Option<&str>,
        password: &[u8],
        remember: bool,
        opts: &ClientOptions,
    ) -> Result<LoginInfo> {
        let mut work = profile.clone();
        let info = Self::login_into(&mut work, address, server, password, remember, opts).await?;
        *profile = work;
        Ok(info)
    }

    /// [`Session::login`] on a working copy of the profile.
    async fn login_into(
        profile: &mut Profile,
        address: &Address,
        server: Option<&str>,
        password: &[u8],
        remember: bool,
        opts: &ClientOptions,
    ) -> Result<LoginInfo> {
        let prev_timeouts = profile.config.as_ref().map(|c| c.timeouts);
        let timeouts = opts
            .timeouts
            .or(prev_timeouts.map(TimeoutConfig::to_timeouts))
            .unwrap_or_default();
        let candidates = match server {
            Some(s) => vec![s.to_owned()],
            None => discover(&address.domain, opts).await?,
        };
        let compat = opts.compat.unwrap_or_default();
        let explicit_2016 = opts.compat == Some(Compat::Legacy2016);
        let mut last = None;
        for cand in candidates {
            match connect_verified(
                profile,
                &cand,
                timeouts,
                true,
                explicit_2016,
                opts.require_tls,
            )
            .await
            {
                Ok((mut conn, server_key, status)) => {
                    // The profile's OPAQUE pin counts only for the same account on the
                    // same server.
                    let pinned_opaque = profile.config.as_ref().is_some_and(|c| {
                        c.opaque && c.server == cand && c.address == address.to_string()
                    });
                    let got = obtain_keys(&mut conn, &cand, address, password, pinned_opaque).await;
                    let (keys, opaque) = match got {
                        Ok(k) => k,
                        Err(e) => {
                            conn.close(Some(&e)).await;
                            return Err(e);
                        }
                    };
                    let dialect = conn.dialect();
                    let _ = conn.obai().await;
                    profile.config = Some(ProfileConfig {
                        address: address.to_string(),
                        server: cand.clone(),
                        public_key: keys.public().to_hex(),
                        // Only an explicit `--compat 2016` enables sending to a 2016
                        // server; detecting one is not consent to its unconfirmed MAIL.
                        compat,
                        timeouts: TimeoutConfig {
                            connect_secs: timeouts.connect.as_secs_f64(),
                            io_secs: timeouts.io.as_secs_f64(),
                        },
                        // What the server spoke, for the downgrade check of later
                        // connections.
                        dialect: Some(match dialect {
                            Dialect::Cmtp1 => Compat::Cmtp1,
                            Dialect::Legacy2016 => Compat::Legacy2016,
                        }),
                        opaque,
                    });
                    // My own key is pinned like any other user's.
                    profile.pins.pin_user(&address.to_string(), &keys.public());
                    profile.save()?;
                    if remember {
                        profile.remember_secret(&keys)?;
                    } else {
                        profile.forget_secret()?;
                    }
                    return Ok(LoginInfo {
                        address: address.clone(),
                        server: cand,
                        server_key,
                        server_key_status: status,
                        public_key: keys.public(),
                        dialect,
                        remembered: remember,
                    });
                }
                // Only "could not reach this candidate" moves on to the next one.
                // An MX host on port 25 may well be a plain SMTP server: try the next.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::NotCmtp
                    ) =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Discovery {
            domain: address.domain.clone(),
            reason: "no candidate server".into(),
        }))
    }

    /// Re-pins the home server's key after a deliberate change: connects, and pins the
    /// presented key if its fingerprint (or hex) equals `fingerprint`.
    pub async fn trust_server(
        profile: &mut Profile,
        fingerprint: &str,
        opts: &ClientOptions,
    ) -> Result<PublicKey> {
        let cfg = profile.require_config()?.clone();
        let timeouts = opts.timeouts.unwrap_or_else(|| cfg.timeouts.to_timeouts());
        let conn = Connection::connect(&cfg.server, timeouts).await?;
        // The pin is what is being replaced: the TLS handshake takes any key, and the
        // fingerprint check below decides.
        let mut unpinned = profile.clone();
        unpinned.pins.servers.remove(&cfg.server);
        let mut conn = secure(&unpinned, &cfg.server, conn, opts.require_tls).await?;
        let allow_2016 = opts.compat.unwrap_or(cfg.compat) == Compat::Legacy2016;
        let r =
            Self::trust_presented(profile, &cfg.server, &mut conn, fingerprint, allow_2016).await;
        conn.close(r.as_ref().err()).await;
        r
    }

    /// The checks of [`Session::trust_server`] once connected.
    async fn trust_presented(
        profile: &mut Profile,
        server: &str,
        conn: &mut Connection,
        fingerprint: &str,
        allow_2016: bool,
    ) -> Result<PublicKey> {
        check_downgrade(profile, server, conn, allow_2016)?;
        let key = conn.fetch_server_key().await?;
        if conn.tls_key().is_some_and(|k| *k != key) {
            return Err(ClientError::Protocol {
                step: "comparing the TLS key with the server key",
                peer: conn.peer(),
                detail: "the TLS key is not the server key".into(),
            });
        }
        let want = norm_hex(fingerprint);
        let matches =
            !want.is_empty() && (want == norm_hex(&key.fingerprint()) || want == key.to_hex());
        if !matches {
            return Err(ClientError::FingerprintMismatch {
                expected: fingerprint.to_owned(),
                presented: key.fingerprint(),
            });
        }
        // A new server key is a new server: what the old one offered (OPAQUE) is no
        // promise for it, and its accounts may not have upgraded yet.
        if profile.pins.check_server(server, &key) != PinStatus::Same
            && let Some(c) = profile.config.as_mut()
            && c.server == server
        {
            c.opaque = false;
        }
        profile.pins.pin_server(server, &key);
        if conn.is_tls() {
            profile.pins.pin_tls(server);
        }
        profile.save()?;
        Ok(key)
    }

    /// Opens a session for a logged-in profile: connects to the home server and checks
    /// its key against the pin. A remembered secret key is loaded; otherwise call
    /// [`Session::unlock`] before mailbox commands.
    pub async fn open(mut profile: Profile, opts: &ClientOptions) -> Result<Session> {
        let cfg = profile.require_config()?.clone();
        let address = profile.address()?;
        let timeouts = opts.timeouts.unwrap_or_else(|| cfg.timeouts.to_timeouts());
        let compat = opts.compat.unwrap_or(cfg.compat);
        let keys = profile.remembered_secret()?;
        if let Some(k) = &keys
            && k.public() != profile.public_key()?
        {
            return Err(ClientError::Profile {
                path: profile.dir().display().to_string(),
                detail: "the remembered secret key does not match the profile's public key".into(),
            });
        }
        let allow_2016 = compat == Compat::Legacy2016;
        let (conn, _, _) = connect_verified(
            &mut profile,
            &cfg.server,
            timeouts,
            false,
            allow_2016,
            opts.require_tls,
        )
        .await?;
        let dialect = conn.dialect();
        Ok(Session {
            profile,
            address,
            conn: Some(conn),
            keys,
            timeouts,
            dialect,
            allow_2016_mail: allow_2016,
            require_tls: opts.require_tls,
            max_message: opts.max_message.unwrap_or(DEFAULT_MAX_MESSAGE),
        })
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// My address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The server dialect in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// True when the secret key is available (remembered, or after [`Session::unlock`]).
    pub fn is_unlocked(&self) -> bool {
        self.keys.is_some()
    }

    async fn conn(&mut self) -> Result<&mut Connection> {
        let c = match self.conn.take() {
            Some(c) => c,
            None => {
                let server = self.profile.require_config()?.server.clone();
                let (c, _, _) = connect_verified(
                    &mut self.profile,
                    &server,
                    self.timeouts,
                    false,
                    self.allow_2016_mail,
                    self.require_tls,
                )
                .await?;
                c
            }
        };
        Ok(self.conn.insert(c))
    }

    /// Closes the connection (saying OBAI when the server may still listen) after an
    /// error that may have left it unusable.
    async fn after<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r
            && matches!(
                e.kind(),
                ErrorKind::Protocol | ErrorKind::Timeout | ErrorKind::TooLarge
            )
            && let Some(c) = self.conn.take()
        {
            c.close(Some(e)).await;
        }
        r
    }

    /// Fetches the xzibit again (OPAQUE when the server offers it, else LOGIN) and
    /// opens it with `password`. An account logging in the CMTP/1 way on a server that
    /// offers OPAQUE is upgraded on the way (and the profile remembers it).
    pub async fn unlock(&mut self, password: &[u8]) -> Result<()> {
        let address = self.address.clone();
        let cfg = self.profile.require_config()?.clone();
        let conn = self.conn().await?;
        let r = obtain_keys(conn, &cfg.server, &address, password, cfg.opaque).await;
        let (keys, opaque) = self.after(r).await?;
        if opaque
            && !cfg.opaque
            && let Some(c) = self.profile.config.as_mut()
        {
            c.opaque = true;
            self.profile.save()?;
        }
        if keys.public() != self.profile.public_key()? {
            return Err(ClientError::Profile {
                path: self.profile.dir().display().to_string(),
                detail: "the account's key changed since login; run `cmtp login` again".into(),
            });
        }
        self.keys = Some(keys);
        Ok(())
    }

    /// Asks the home server for `address`'s key (KEYREQUEST user domain) and compares
    /// it with the pin. Does not change the pins (see [`Session::pin_user`]).
    pub async fn lookup_key(&mut self, address: &Address) -> Result<KeyLookup> {
        let conn = self.conn().await?;
        let r = conn.key_request(&address.account, &address.domain).await;
        let key = self
            .after(r)
            .await?
            .ok_or_else(|| ClientError::UnknownUser {
                address: address.to_string(),
            })?;
        let status = self.profile.pins.check_user(&address.to_string(), &key);
        Ok(KeyLookup {
            address: address.clone(),
            key,
            status,
        })
    }

    /// Pins `key` for `address` (and saves the profile).
    pub fn pin_user(&mut self, address: &Address, key: &PublicKey) -> Result<()> {
        self.profile.pins.pin_user(&address.to_string(), key);
        self.profile.save()
    }

    /// The unlocked key pair, or a profile error saying the password is needed.
    fn keys(&self) -> Result<&KeyPair> {
        self.keys.as_ref().ok_or_else(|| ClientError::Profile {
            path: self.profile.dir().display().to_string(),
            detail: "the secret key is needed: unlock the session with the password".into(),
        })
    }

    /// Signs a mailbox request with the user's key for the home domain.
    fn signed(&self, mut req: MboxRequest, kind: MboxKind) -> Result<MboxRequest> {
        sign_mbox(&mut req, kind, &self.address.domain, self.keys()?);
        Ok(req)
    }

    /// Checks the connection with NOOP.
    pub async fn noop(&mut self) -> Result<()> {
        let conn = self.conn().await?;
        let r = conn.noop().await;
        self.after(r).await
    }

    /// Says goodbye (OBAI) and closes the connection. Call it on every path, errors
    /// included: a session dropped without it just disconnects.
    pub async fn close(mut self) {
        if let Some(c) = self.conn.take() {
            c.close(None).await;
        }
    }
}
