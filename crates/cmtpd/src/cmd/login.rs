//! `LOGIN\0user\0` (spec §5.4): the user's xzibit, signed.

use crate::connection::Conn;
use crate::metrics::FailureReason;
use crate::shared::Backend;

/// Answers the xzibit or, for an unknown (or invalid) user, the version-0 FAILURE —
/// always an answer (the 2016 server hung here). A store error is answered with the
/// same version-0 FAILURE (LOGIN's own failure shape, which the client expects) and the
/// connection stays open: nothing of the conversation's state depends on it.
pub(super) fn login<S: Backend>(c: &mut Conn<S>, user: &str) {
    let sh = c.shared().clone();
    if cmtp_proto::validate_name(user).is_err() {
        c.reply(&sh.signer.v0_failure);
        return;
    }
    match sh
        .resolve(user, |n| sh.store.xzibit(n))
        .map(|f| f.map(|(_, x)| x))
    {
        Ok(Some(x)) if !x.is_empty() => c.reply(&sh.signer.login_reply(&x)),
        Ok(_) => c.reply(&sh.signer.v0_failure),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on LOGIN");
            sh.metrics.failure(FailureReason::Internal);
            c.reply(&sh.signer.v0_failure);
        }
    }
}
