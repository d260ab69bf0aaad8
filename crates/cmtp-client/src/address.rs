//! Mail addresses: `account@domain`.

use std::fmt;

use crate::error::{ClientError, Result};

/// A CMTP address, `account@domain`. Both halves follow the spec §2 name rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// The account (before the last `@`).
    pub account: String,
    /// The domain (after the last `@`).
    pub domain: String,
}

impl Address {
    /// Parses `account@domain`; the last `@` splits (accounts may not contain `@`
    /// in practice, but the name rule allows it, domains never).
    pub fn parse(s: &str) -> Result<Address> {
        let bad = |why: &str| ClientError::BadAddress {
            address: s.to_owned(),
            why: why.to_owned(),
        };
        let (account, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| bad("expected account@domain"))?;
        if account.is_empty() {
            return Err(bad("empty account"));
        }
        if domain.is_empty() {
            return Err(bad("empty domain"));
        }
        cmtp_proto::validate_account(account).map_err(|e| bad(&e.to_string()))?;
        cmtp_proto::validate_domain(domain).map_err(|e| bad(&e.to_string()))?;
        Ok(Address {
            account: account.to_owned(),
            domain: domain.to_owned(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.account, self.domain)
    }
}

impl std::str::FromStr for Address {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let a = Address::parse("alice@example.org").unwrap();
        assert_eq!(a.account, "alice");
        assert_eq!(a.domain, "example.org");
        assert_eq!(a.to_string(), "alice@example.org");
        for bad in ["alice", "@x", "a@", "../x@y", "a@..", "a/b@c"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
