//! `KEYREQUEST\0user\0domain\0` (spec §5.3, D2).

use crate::connection::{Conn, ConnError, Flow};
use crate::shared::Backend;

/// Answers the server key (empty user), a local user's key, or KEYNOTAVAILABLE.
/// Invalid names are answered as nonexistent and never reach the store.
pub(super) async fn keyrequest<S: Backend>(
    c: &mut Conn<S>,
    user: &str,
    domain: &str,
) -> Result<Flow, ConnError> {
    let sh = c.shared().clone();
    if user.is_empty() {
        c.reply(&sh.signer.server_key);
        return Ok(Flow::Continue);
    }
    if cmtp_proto::validate_name(user).is_err() || cmtp_proto::validate_domain(domain).is_err() {
        c.reply(&sh.signer.key_not_available);
        return Ok(Flow::Continue);
    }
    if !sh.is_local(domain) {
        match sh.relay.key(&sh.store, user, domain).await {
            Some(k) => c.reply(&sh.signer.user_key_reply(&k)),
            None => c.reply(&sh.signer.key_not_available),
        }
        return Ok(Flow::Continue);
    }
    // postmaster@ (RFC 5321): the mapped account's key, else an account of that name,
    // else the server's own key (the server's mailbox receives it).
    let alias = sh.postmaster_alias(user);
    match sh.resolve(alias.as_deref().unwrap_or(user), |n| sh.store.public_key(n)) {
        Ok(Some((_, k))) => c.reply(&sh.signer.user_key_reply(&k)),
        Ok(None) if cmtp_proto::fold(user) == crate::shared::POSTMASTER => {
            c.reply(&sh.signer.server_key)
        }
        Ok(None) => c.reply(&sh.signer.key_not_available),
        Err(e) => return Ok(c.internal_failure("user store failed on KEYREQUEST", &e)),
    }
    Ok(Flow::Continue)
}
