//! What happens to requests for foreign domains: the seam the federation work plugs into.
//!
//! Today the only policy is [`Relay::Refuse`]: mail for another domain gets
//! DELIVERYFAILURE, a key request for another domain gets KEYNOTAVAILABLE.

/// The server's relaying policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Relay {
    /// Refuse everything for foreign domains.
    #[default]
    Refuse,
}

/// What to do with a message for a foreign domain, decided from the envelope alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailDecision {
    /// Read and discard the message, answer DELIVERYFAILURE.
    Refuse,
}

impl Relay {
    /// Decides about a message for `dest_account@dest_domain` (a foreign domain).
    pub fn mail(&self, _dest_account: &str, _dest_domain: &str) -> MailDecision {
        match self {
            Relay::Refuse => MailDecision::Refuse,
        }
    }

    /// The public key of `user@domain` (a foreign domain), verified, or None.
    pub async fn key(&self, _user: &str, _domain: &str) -> Option<[u8; 32]> {
        match self {
            Relay::Refuse => None,
        }
    }
}
