//! `LOGIN\0user\0` (spec §5.4): the user's xzibit, signed — unless `legacy_login`
//! refuses it (docs/protocol.md D8).

use crate::config::LegacyLogin;
use crate::connection::Conn;
use crate::metrics::FailureReason;
use crate::shared::Backend;

/// Answers the xzibit or, for an unknown (or invalid) user, the version-0 FAILURE —
/// always an answer (the 2016 server hung here). A store error is answered with the
/// same version-0 FAILURE (LOGIN's own failure shape, which the client expects) and the
/// connection stays open: nothing of the conversation's state depends on it.
///
/// Refused (the same version-0 FAILURE) for an account that has an OPAQUE login, whose
/// xzibit is never again handed out in the clear, and for every account under
/// `legacy_login = "deny"`.
pub(super) fn login<S: Backend>(c: &mut Conn<S>, user: &str) {
    let sh = c.shared().clone();
    if cmtp_proto::validate_name(user).is_err() {
        c.reply(&sh.signer.v0_failure);
        return;
    }
    if sh.config.load().legacy_login == LegacyLogin::Deny {
        sh.metrics.failure(FailureReason::LegacyLoginRefused);
        c.reply(&sh.signer.v0_failure);
        return;
    }
    let found = sh.resolve(user, |n| {
        Ok::<_, cmtp_store::StoreError>(match sh.store.xzibit(n)? {
            Some(x) => Some((x, sh.store.opaque_login(n)?.is_some())),
            None => None,
        })
    });
    match found.map(|f| f.map(|(_, x)| x)) {
        Ok(Some((_, true))) if sh.opaque.is_some() => {
            sh.metrics.failure(FailureReason::LegacyLoginRefused);
            c.reply(&sh.signer.v0_failure);
        }
        Ok(Some((x, _))) if !x.is_empty() => c.reply(&sh.signer.login_reply(&x)),
        Ok(_) => c.reply(&sh.signer.v0_failure),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on LOGIN");
            sh.metrics.failure(FailureReason::Internal);
            c.reply(&sh.signer.v0_failure);
        }
    }
}
