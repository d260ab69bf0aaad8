//! `KEYREQUEST\0user\0domain\0` (spec §5.3, D2).

use cmtp_store::UserStore;

use crate::connection::Conn;
use crate::metrics::FailureReason;

/// Answers the server key (empty user), a local user's key, or KEYNOTAVAILABLE.
/// Invalid names are answered as nonexistent and never reach the store.
pub(crate) async fn keyrequest(c: &mut Conn, user: &str, domain: &str) {
    let sh = c.shared.clone();
    if user.is_empty() {
        c.out.extend_from_slice(&sh.signer.server_key);
        return;
    }
    if cmtp_proto::validate_name(user).is_err() || cmtp_proto::validate_domain(domain).is_err() {
        c.out.extend_from_slice(&sh.signer.key_not_available);
        return;
    }
    if !sh.is_local(domain) {
        match sh.relay.key(user, domain).await {
            Some(k) => c.out.extend_from_slice(&sh.signer.user_key_reply(&k)),
            None => c.out.extend_from_slice(&sh.signer.key_not_available),
        }
        return;
    }
    match sh.store.public_key(user) {
        Ok(Some(k)) => c.out.extend_from_slice(&sh.signer.user_key_reply(&k)),
        Ok(None) => c.out.extend_from_slice(&sh.signer.key_not_available),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on KEYREQUEST");
            sh.metrics.failure(FailureReason::Internal);
            c.reply_failure();
        }
    }
}
