//! Sending: one sealed MAIL per local recipient, one signed SUBMIT per recipient of
//! another domain (docs/protocol.md D5).

use super::*;

impl Session {
    /// Sends `draft`: one message per recipient (To, then CC; duplicates once), each
    /// sealed to that recipient's key, which is fetched through the home server and
    /// pinned on first use (a changed key fails that recipient). A local recipient
    /// (the profile's domain) gets a MAIL ([`MailOutcome::Delivered`]); a recipient of
    /// another domain a SUBMIT signed with the user's key ([`MailOutcome::Queued`]),
    /// so the session must be unlocked first when [`Session::send_needs_keys`] says so.
    /// Returns one result per recipient; only a local problem (unreadable draft, too
    /// large, the key needed and not unlocked) fails all, before anything is sent.
    pub async fn send(
        &mut self,
        draft: &Draft,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RecipientResult>> {
        let legacy = self.dialect == Dialect::Legacy2016;
        if legacy && !self.allow_2016_mail {
            return Err(ClientError::Unsupported(
                "the home server is the 2016 implementation: it never confirms MAIL and needs \
                 a nonce after the message; to send anyway use `--compat 2016` \
                 (see docs/client.md)"
                    .into(),
            ));
        }
        if legacy && !draft.attachments.is_empty() {
            return Err(ClientError::Unsupported(
                "the 2016 server cannot receive attachments (it misreads them); \
                 send without --attach"
                    .into(),
            ));
        }
        let body_plain = if legacy {
            // The 2016 client sealed the bare text; its reader shows nothing else.
            Zeroizing::new(draft.text.as_bytes().to_vec())
        } else {
            let ib = InternalBody {
                timestamp: u32::try_from(unix_now()).unwrap_or(u32::MAX),
                subject: draft.subject.clone(),
                reply_to: draft
                    .reply_to
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                cc: draft.cc.iter().map(|a| a.to_string()).collect(),
                text: draft.text.clone(),
            };
            Zeroizing::new(ib.to_bytes().map_err(ClientError::InvalidBody)?)
        };
        let seal = cmtp_crypto::SEAL_OVERHEAD as u64;
        let att_total: u64 = draft
            .attachments
            .iter()
            .map(|a| 8 + a.plaintext().len() as u64 + seal)
            .sum();
        let total = 24 + 4 * 256 + 1 + body_plain.len() as u64 + seal + att_total;
        if total > self.max_message {
            return Err(ClientError::TooLarge {
                detail: format!(
                    "about {total} bytes, over the limit of {} bytes",
                    self.max_message
                ),
            });
        }
        if self.send_needs_keys(draft) && self.keys.is_none() {
            return Err(ClientError::Profile {
                path: self.profile.dir().display().to_string(),
                detail: "sending to another domain needs the secret key (SUBMIT is signed): \
                         unlock the session with the password"
                    .into(),
            });
        }
        let mut recipients: Vec<(Address, bool)> = Vec::new();
        for (a, cc) in draft
            .to
            .iter()
            .map(|a| (a, false))
            .chain(draft.cc.iter().map(|a| (a, true)))
        {
            if !recipients.iter().any(|(b, _)| b == a) {
                recipients.push((a.clone(), cc));
            }
        }
        let mut results = Vec::with_capacity(recipients.len());
        for (addr, cc) in recipients {
            let outcome = self
                .send_one(&addr, &body_plain, draft, att_total, progress)
                .await;
            let outcome = self.after(outcome).await;
            if legacy && let Some(c) = self.conn.take() {
                // The 2016 exchange ends with OBAI (sent after a MAIL, or now after a
                // failure): the next recipient needs a new connection.
                if outcome.is_err() {
                    c.close(outcome.as_ref().err()).await;
                }
            }
            results.push(RecipientResult {
                address: addr,
                cc,
                outcome,
            });
        }
        Ok(results)
    }

    /// True when sending `draft` needs the user's key pair: a recipient is in another
    /// domain than the profile's, so it goes by SUBMIT, which the key signs. (Never
    /// with the 2016 server, which has no SUBMIT.)
    pub fn send_needs_keys(&self, draft: &Draft) -> bool {
        self.dialect == Dialect::Cmtp1
            && draft.to.iter().chain(&draft.cc).any(|a| self.is_foreign(a))
    }

    /// A recipient the home server does not hold: its domain is not the profile's.
    fn is_foreign(&self, addr: &Address) -> bool {
        addr.domain != self.address.domain
    }

    async fn send_one(
        &mut self,
        addr: &Address,
        body_plain: &[u8],
        draft: &Draft,
        att_total: u64,
        progress: &mut dyn Progress,
    ) -> Result<MailOutcome> {
        let lookup = self.lookup_key(addr).await?;
        match &lookup.status {
            PinStatus::Same => {}
            PinStatus::New => self.pin_user(addr, &lookup.key)?,
            PinStatus::Changed(old) => {
                return Err(ClientError::UserKeyChanged {
                    address: addr.to_string(),
                    pinned: old.fingerprint(),
                    presented: lookup.key.fingerprint(),
                });
            }
        }
        let key = lookup.key;
        let body = cmtp_crypto::seal(body_plain, &key)?;
        let head = MailHead {
            version: 1,
            dest_account: addr.account.clone(),
            dest_domain: addr.domain.clone(),
            src_account: self.address.account.clone(),
            src_domain: self.address.domain.clone(),
            // The 2016 reader ignores log_length and expects the body right after the
            // names: no log for it. Otherwise the smallest log, one NUL.
            log: if self.dialect == Dialect::Legacy2016 {
                Vec::new()
            } else {
                vec![0]
            },
        };
        let outcome = if self.dialect == Dialect::Cmtp1 && self.is_foreign(addr) {
            // The signature, sent before the message, covers the sealed attachments,
            // and sealing is randomised: seal them all first and keep them (about the
            // attachments' size again in memory, bounded by the message limit).
            let sealed = draft
                .attachments
                .iter()
                .map(|a| cmtp_crypto::seal(a.plaintext(), &key).map_err(ClientError::from))
                .collect::<Result<Vec<_>>>()?;
            let digest = submit_digest(&head, &body, &sealed)?;
            let mut req = SubmitRequest::new(head.src_account.clone(), unix_now());
            sign_submit(&mut req, &head.src_domain, &digest, self.keys()?);
            let conn = self.conn().await?;
            conn.send_submit(&req, &head, &body, sealed, progress)
                .await?
        } else {
            let atts = draft
                .attachments
                .iter()
                .map(move |a| cmtp_crypto::seal(a.plaintext(), &key).map_err(ClientError::from));
            let conn = self.conn().await?;
            conn.send_mail(&head, &body, atts, att_total, progress)
                .await?
        };
        if outcome == MailOutcome::DeliveryFailure {
            return Err(ClientError::DeliveryFailure {
                recipient: addr.to_string(),
                why: "no such account there, relaying refused (for another domain: the \
                      server did not accept the submission, e.g. clocks more than 5 minutes \
                      apart), or the recipient's domain has no reachable CMTP server"
                    .into(),
            });
        }
        Ok(outcome)
    }
}
