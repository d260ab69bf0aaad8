//! `LOGIN\0user\0` (spec §5.4): the user's xzibit, signed.

use cmtp_store::UserStore;

use crate::connection::Conn;
use crate::metrics::FailureReason;

/// Answers the xzibit or, for an unknown (or invalid) user, the version-0 FAILURE —
/// always an answer (the 2016 server hung here).
pub(crate) fn login(c: &mut Conn, user: &str) {
    let sh = c.shared.clone();
    if cmtp_proto::validate_name(user).is_err() {
        c.out.extend_from_slice(&sh.signer.v0_failure);
        return;
    }
    match sh.store.xzibit(user) {
        Ok(Some(x)) if !x.is_empty() => sh.signer.login_reply(&x, &mut c.out),
        Ok(_) => c.out.extend_from_slice(&sh.signer.v0_failure),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on LOGIN");
            sh.metrics.failure(FailureReason::Internal);
            c.out.extend_from_slice(&sh.signer.v0_failure);
        }
    }
}
