//! The OPAQUE login extension (docs/protocol.md D8) on a connection: log in without the
//! xzibit ever crossing the network in a form a password guess can be tested against,
//! and register (upgrade, password change) signed by the user's key.

use cmtp_crypto::opaque::{ClientLoginState, ClientRegistrationState, open_xzibit};
use cmtp_crypto::{CryptoError, KeyPair};
use cmtp_proto::Command;
use cmtp_proto::opaque::{
    self as wire, MAX_REPLY_PAYLOAD, OpaqueCommand, OpaqueReply, RegAuth, decode_reply,
};
use cmtp_proto::reply::{self, StatusReply};
use zeroize::Zeroizing;

use super::Connection;
use crate::error::{ClientError, Result};

/// Why an OPAQUE step did not succeed, for the caller's fallback decision.
#[derive(Debug)]
pub enum OpaqueOutcome<T> {
    /// It worked.
    Done(T),
    /// The password did not prove itself: wrong password, no such account, or an
    /// account with no OPAQUE login yet (the protocol does not tell these apart).
    Refused,
}

/// Runs a slow KSF step off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, CryptoError> + Send + 'static,
) -> Result<std::result::Result<T, CryptoError>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Task {
            what: "OPAQUE key stretching",
            detail: e.to_string(),
        })
}

impl Connection {
    /// Whether the server named `capability` in its OHAI answer (D6).
    pub fn offers(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    async fn opaque_send(&mut self, step: &'static str, cmd: OpaqueCommand) -> Result<()> {
        self.send(step, Command::Opaque(cmd)).await
    }

    /// Reads an extension reply: `Ok(payload, sig)`, or `Err(Refused)` for a signed
    /// AUTHFAILURE; a signed general FAILURE (rate limit) is
    /// [`ClientError::ServerFailure`]. Every signature is checked.
    async fn opaque_reply(
        &mut self,
        step: &'static str,
    ) -> Result<std::result::Result<(Vec<u8>, [u8; 64]), ()>> {
        match self
            .read_reply(step, |b| decode_reply(b, MAX_REPLY_PAYLOAD))
            .await?
        {
            OpaqueReply::Payload { payload, sig } => Ok(Ok((payload, sig))),
            OpaqueReply::Status(s) => {
                self.verify("reply", s.signed_bytes(), status_sig(&s))?;
                match s {
                    StatusReply::V0(v) if v.text == reply::AUTHFAILURE => Ok(Err(())),
                    StatusReply::General(g) if !g.ok => Err(ClientError::ServerFailure { step }),
                    StatusReply::General(_) => Err(self.proto(step, "unexpected SUCCESS")),
                    StatusReply::V0(v) => {
                        Err(self.proto(step, &format!("unexpected {:?}", v.text)))
                    }
                }
            }
        }
    }

    /// OPAQUE1/OPAQUE2 for `user`: the xzibit the server releases under the session
    /// key (still encrypted under the password, as stored), or `Refused`.
    pub async fn opaque_login(
        &mut self,
        user: &str,
        password: &[u8],
    ) -> Result<OpaqueOutcome<Vec<u8>>> {
        const STEP1: &str = "reading the OPAQUE1 reply";
        const STEP2: &str = "reading the OPAQUE2 reply";
        let (state, ke1) = ClientLoginState::start(password)?;
        self.opaque_send(
            "sending OPAQUE1",
            OpaqueCommand::Login1 {
                user: user.to_owned(),
                ke1: ke1.clone(),
            },
        )
        .await?;
        let Ok((ke2, sig)) = self.opaque_reply(STEP1).await? else {
            return Ok(OpaqueOutcome::Refused);
        };
        self.verify(
            "KE2",
            &wire::login1_reply_signing_bytes(user, &ke1, &ke2),
            &sig,
        )?;
        let pw = Zeroizing::new(password.to_vec());
        let (ke3, session) = match blocking(move || state.finish(&pw, &ke2)).await? {
            Ok(done) => done,
            // The envelope did not open: nothing is sent; the server's half-done login
            // dies with the next OPAQUE1 or the connection.
            Err(CryptoError::WrongPassword) => return Ok(OpaqueOutcome::Refused),
            Err(e) => return Err(self.proto(STEP1, &e.to_string())),
        };
        self.opaque_send(
            "sending OPAQUE2",
            OpaqueCommand::Login2 { ke3: ke3.clone() },
        )
        .await?;
        let Ok((sealed, sig)) = self.opaque_reply(STEP2).await? else {
            return Ok(OpaqueOutcome::Refused);
        };
        self.verify(
            "released xzibit",
            &wire::login2_reply_signing_bytes(&ke3, &sealed),
            &sig,
        )?;
        open_xzibit(&session, &sealed)
            .map(OpaqueOutcome::Done)
            .map_err(|e| self.proto(STEP2, &format!("released xzibit: {e}")))
    }

    /// OPAQUEREG1/OPAQUEREG2: registers `password` for `user` (whose key pair `keys`
    /// signs both steps, for the server's domain `domain`), and with `new_xzibit` replaces
    /// the stored xzibit too (sealed to the server key on the way). `Refused` when the
    /// server does not accept the signature or the registration.
    pub async fn opaque_register(
        &mut self,
        user: &str,
        domain: &str,
        keys: &KeyPair,
        password: &[u8],
        new_xzibit: Option<&[u8]>,
    ) -> Result<OpaqueOutcome<()>> {
        const STEP1: &str = "reading the OPAQUEREG1 reply";
        const STEP2: &str = "reading the OPAQUEREG2 reply";
        let server_key = *self
            .server_key
            .as_ref()
            .ok_or(ClientError::NoServerKey { peer: self.peer })?;
        let (state, request) = ClientRegistrationState::start(password)?;
        // Two different timestamps: the server refuses a registration not newer than the
        // stored one, so one login that registers twice within a second still works.
        let now = crate::unix_now();
        let mut reg1 = OpaqueCommand::Register1 {
            auth: RegAuth {
                user: user.to_owned(),
                timestamp: now,
                signature: [0; 64],
            },
            request: request.clone(),
        };
        sign(&mut reg1, domain, keys);
        self.opaque_send("sending OPAQUEREG1", reg1).await?;
        let Ok((response, sig)) = self.opaque_reply(STEP1).await? else {
            return Ok(OpaqueOutcome::Refused);
        };
        self.verify(
            "registration response",
            &wire::reg1_reply_signing_bytes(user, &request, &response),
            &sig,
        )?;
        let pw = Zeroizing::new(password.to_vec());
        let record = blocking(move || state.finish(&pw, &response))
            .await?
            .map_err(|e| self.proto(STEP1, &e.to_string()))?;
        let sealed_xzibit = match new_xzibit {
            Some(x) => cmtp_crypto::seal(x, &server_key)?,
            None => Vec::new(),
        };
        let mut reg2 = OpaqueCommand::Register2 {
            auth: RegAuth {
                user: user.to_owned(),
                timestamp: now,
                signature: [0; 64],
            },
            record,
            sealed_xzibit,
        };
        sign(&mut reg2, domain, keys);
        self.opaque_send("sending OPAQUEREG2", reg2).await?;
        let answer = self.read_reply(STEP2, reply::decode_general_or_v0).await?;
        self.verify("reply", answer.signed_bytes(), status_sig(&answer))?;
        match answer {
            StatusReply::General(g) if g.ok => Ok(OpaqueOutcome::Done(())),
            StatusReply::General(_) => Err(ClientError::ServerFailure { step: STEP2 }),
            StatusReply::V0(v) if v.text == reply::AUTHFAILURE => Ok(OpaqueOutcome::Refused),
            StatusReply::V0(v) => Err(self.proto(STEP2, &format!("unexpected {:?}", v.text))),
        }
    }
}

fn status_sig(s: &StatusReply) -> &[u8; 64] {
    match s {
        StatusReply::General(g) => &g.sig,
        StatusReply::V0(v) => &v.sig,
    }
}

/// Signs a registration command with the user's key for `domain`.
fn sign(cmd: &mut OpaqueCommand, domain: &str, keys: &KeyPair) {
    let sig = match cmd.register_signing(domain) {
        Some((_, bytes)) => *keys.sign(&bytes).as_bytes(),
        None => return,
    };
    if let OpaqueCommand::Register1 { auth, .. } | OpaqueCommand::Register2 { auth, .. } = cmd {
        auth.signature = sig;
    }
}
