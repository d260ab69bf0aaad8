//! The `[tls]` section: transport encryption (docs/protocol.md D7).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Commands that a server can refuse over a connection without TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protected {
    /// LOGIN (it hands out the xzibit).
    Login,
    /// MBOXLIST, MBOXFETCH, MBOXDEL (what a mailbox holds, and who wrote).
    Mailbox,
}

/// Transport encryption: TLS 1.3 with the server key as a raw public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Offer `TLSSTART` (capability `TLS` in the OHAI answer) on the `listen`
    /// addresses. It costs nothing to offer and CMTP/1 clients ignore it. [restart]
    pub offer: bool,
    /// Implicit-TLS listen addresses: the handshake comes first, then the CMTP session.
    /// Empty (the default) = none. [restart]
    pub listen: Vec<SocketAddr>,
    /// Commands refused with a signed FAILURE on a connection without TLS (`"login"`,
    /// `"mailbox"`). Empty (the default), so every CMTP/1 client keeps working.
    pub require_for: Vec<Protected>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            offer: true,
            listen: Vec::new(),
            require_for: Vec::new(),
        }
    }
}

impl Tls {
    /// Whether `what` is refused over a connection without TLS.
    pub fn requires(&self, what: Protected) -> bool {
        self.require_for.contains(&what)
    }
}
