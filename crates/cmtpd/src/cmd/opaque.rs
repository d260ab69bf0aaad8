//! The OPAQUE login extension (docs/protocol.md D8): OPAQUE1/OPAQUE2 log in and release
//! the xzibit under the session key; OPAQUEREG1/OPAQUEREG2 (signed by the user's key)
//! register a new record, and with a password change a new xzibit.
//!
//! A login that fails for any reason (no such account, no record yet, wrong password,
//! malformed message) is answered the same way: v0 AUTHFAILURE, after a KE2 of the same
//! shape whether or not the account exists.

use cmtp_crypto::{PublicKey, Signature, Xzibit};
use cmtp_proto::opaque::{self, OpaqueCommand, RegAuth};
use cmtp_proto::submit::TIMESTAMP_WINDOW_SECS;
use cmtp_store::StoreError;

use crate::connection::{Conn, PendingLogin};
use crate::metrics::FailureReason;
use crate::opaque::StoredLogin;
use crate::shared::{Backend, Shared};

/// Handles one extension command. The caller has checked that the extension is on.
pub(super) fn opaque<S: Backend>(c: &mut Conn<S>, command: OpaqueCommand) {
    match command {
        OpaqueCommand::Login1 { user, ke1 } => login1(c, &user, &ke1),
        OpaqueCommand::Login2 { ke3 } => login2(c, &ke3),
        cmd @ (OpaqueCommand::Register1 { .. } | OpaqueCommand::Register2 { .. }) => {
            register(c, &cmd)
        }
    }
}

fn refuse<S: Backend>(c: &mut Conn<S>, why: &str) {
    let sh = c.shared().clone();
    sh.metrics.failure(FailureReason::OpaqueAuth);
    tracing::debug!(peer = %c.peer(), why, "OPAQUE refused");
    c.reply(&sh.signer.auth_failure);
}

fn payload_reply<S: Backend>(c: &mut Conn<S>, payload: &[u8], signed: &[u8]) {
    let sig = c.shared().signer.sign(signed);
    let mut out = Vec::with_capacity(payload.len() + 72);
    opaque::encode_payload_reply(payload, &sig, &mut out);
    c.reply(&out);
}

/// The stored name and login of `user`, if it is an account with a record.
fn stored_login<S: Backend>(
    sh: &Shared<S>,
    user: &str,
) -> Result<Option<(String, StoredLogin)>, StoreError> {
    if cmtp_proto::validate_name(user).is_err() {
        return Ok(None);
    }
    Ok(sh
        .resolve(user, |n| sh.store.opaque_login(n))?
        .and_then(|(name, b)| StoredLogin::parse(&b).map(|l| (name, l))))
}

fn login1<S: Backend>(c: &mut Conn<S>, user: &str, ke1: &[u8]) {
    let sh = c.shared().clone();
    let Some(setup) = sh.opaque.as_ref() else {
        return refuse(c, "extension off");
    };
    // Per account name, from every address together: the bound on online guessing.
    let folded = cmtp_proto::fold(user);
    let cfg = sh.config.load();
    let rate = &cfg.rate;
    if !sh.account_rates.allow(
        &folded,
        rate.opaque_account_per_min,
        rate.opaque_account_burst,
    ) {
        sh.metrics.failure(FailureReason::RateLimited);
        tracing::debug!(peer = %c.peer(), "OPAQUE login over the per-account limit");
        c.reply_failure();
        return;
    }
    let found = match stored_login(&sh, user) {
        Ok(f) => f,
        Err(e) => {
            // Answered like a missing record (a fake KE2): the client cannot tell, and
            // the error is logged for the operator.
            tracing::error!(error = %e, "user store failed on OPAQUE1");
            sh.metrics.failure(FailureReason::Internal);
            None
        }
    };
    // Without a record the credential identifier is the folded name, so one unknown
    // name always gets the same fake (a name that exists gets its own, stable answer).
    let (account, record, credential) = match &found {
        Some((name, l)) => (Some(name.clone()), Some(l.record.as_slice()), name.as_str()),
        None => (None, None, folded.as_str()),
    };
    match setup.login_start(record, ke1, credential.as_bytes()) {
        Ok((ke2, state)) => {
            c.set_opaque_pending(PendingLogin { state, account });
            let signed = opaque::login1_reply_signing_bytes(user, ke1, &ke2);
            payload_reply(c, &ke2, &signed);
        }
        Err(_) => refuse(c, "malformed KE1"),
    }
}

fn login2<S: Backend>(c: &mut Conn<S>, ke3: &[u8]) {
    let sh = c.shared().clone();
    let Some(pending) = c.take_opaque_pending() else {
        return refuse(c, "OPAQUE2 without OPAQUE1");
    };
    let Ok(session) = pending.state.finish(ke3) else {
        return refuse(c, "KE3 did not verify");
    };
    // A fake KE2 cannot be finished, so a verified KE3 always has an account.
    let Some(account) = pending.account else {
        return refuse(c, "no record");
    };
    let xzibit = match sh.store.xzibit(&account) {
        Ok(Some(x)) if !x.is_empty() => x,
        Ok(_) => return refuse(c, "account gone"),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on OPAQUE2");
            sh.metrics.failure(FailureReason::Internal);
            return refuse(c, "store error");
        }
    };
    match cmtp_crypto::opaque::seal_xzibit(&session, &xzibit) {
        Ok(sealed) => {
            let signed = opaque::login2_reply_signing_bytes(ke3, &sealed);
            payload_reply(c, &sealed, &signed);
        }
        Err(e) => {
            tracing::error!(error = %e, "sealing the xzibit failed");
            sh.metrics.failure(FailureReason::Internal);
            refuse(c, "seal failed");
        }
    }
}

/// The account a registration is for, if its signature is good: `(stored name, its
/// current login if any)`. Same rules as the mailbox commands (D4): fresh timestamp,
/// signature by the account's key over the bytes for one of our domains.
fn authorised<S: Backend>(
    sh: &Shared<S>,
    auth: &RegAuth,
    command: &OpaqueCommand,
) -> Result<Option<(String, Option<StoredLogin>)>, StoreError> {
    if cmtp_proto::validate_name(&auth.user).is_err()
        || crate::unix_now().abs_diff(auth.timestamp) > TIMESTAMP_WINDOW_SECS
    {
        return Ok(None);
    }
    let Some((name, key)) = sh.resolve(&auth.user, |n| sh.store.public_key(n))? else {
        return Ok(None);
    };
    let key = PublicKey::from_array(key);
    let sig = Signature::from_array(auth.signature);
    let ok = sh.config.load().domains.iter().any(|d| {
        let folded = cmtp_proto::fold(d);
        [d.as_str(), folded.as_str()].iter().any(|dom| {
            command
                .register_signing(dom)
                .is_some_and(|(_, bytes)| key.verify(&bytes, &sig).is_ok())
        })
    });
    if !ok {
        return Ok(None);
    }
    let current = sh
        .store
        .opaque_login(&name)?
        .and_then(|b| StoredLogin::parse(&b));
    Ok(Some((name, current)))
}

fn register<S: Backend>(c: &mut Conn<S>, command: &OpaqueCommand) {
    let sh = c.shared().clone();
    let Some(setup) = sh.opaque.as_ref() else {
        return refuse(c, "extension off");
    };
    if !c.limits().mbox_failures_left() {
        // This address failed signed requests too often: no signature check for now.
        sh.metrics.failure(FailureReason::RateLimited);
        c.reply_failure();
        return;
    }
    let Some((auth, _)) = command.register_signing("") else {
        return refuse(c, "not a registration");
    };
    let (name, current) = match authorised(&sh, auth, command) {
        Ok(Some(found)) => found,
        Ok(None) => {
            c.limits().charge_mbox_failure();
            return refuse(c, "registration not authorised");
        }
        Err(e) => {
            tracing::error!(error = %e, "user store failed on OPAQUEREG");
            sh.metrics.failure(FailureReason::Internal);
            return refuse(c, "store error");
        }
    };
    match command {
        OpaqueCommand::Register1 { auth, request } => {
            match setup.registration_response(request, name.as_bytes()) {
                Ok(resp) => {
                    let signed = opaque::reg1_reply_signing_bytes(&auth.user, request, &resp);
                    payload_reply(c, &resp, &signed);
                }
                Err(_) => refuse(c, "malformed registration request"),
            }
        }
        OpaqueCommand::Register2 {
            auth,
            record,
            sealed_xzibit,
        } => {
            // A captured registration must not undo a later one (e.g. a password change):
            // only one signed in the same second as the stored one, or later, is taken.
            if current.is_some_and(|l| auth.timestamp < l.registered) {
                return refuse(c, "registration not newer than the stored one");
            }
            if cmtp_crypto::opaque::check_record(record).is_err() {
                return refuse(c, "malformed record");
            }
            let xzibit = if sealed_xzibit.is_empty() {
                None
            } else {
                match sh.signer.open_sealed(sealed_xzibit) {
                    Ok(x) if Xzibit::parse(&x).is_ok() => Some(x),
                    _ => return refuse(c, "new xzibit does not open or parse"),
                }
            };
            let login = StoredLogin {
                registered: auth.timestamp,
                record: record.clone(),
            };
            match sh.store.set_opaque_login(
                &name,
                &login.to_bytes(),
                xzibit.as_ref().map(|x| x.as_slice()),
            ) {
                Ok(true) => {
                    tracing::info!(account = %name.escape_debug(), new_password = xzibit.is_some(), "OPAQUE login registered");
                    c.reply(&sh.signer.success);
                }
                Ok(false) => refuse(c, "account gone"),
                Err(e) => {
                    tracing::error!(error = %e, "user store failed storing an OPAQUE login");
                    sh.metrics.failure(FailureReason::Internal);
                    refuse(c, "store error");
                }
            }
        }
        _ => refuse(c, "not a registration"),
    }
}
