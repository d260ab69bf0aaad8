//! The mailbox: listing, reading and deleting (signed mailbox requests).

use super::*;

impl Session {
    /// Lists the mailbox; subjects come from `head` fetches (no attachments downloaded).
    /// At most [`DEFAULT_INBOX_LIMIT`] messages (the newest), within
    /// [`DEFAULT_INBOX_DEADLINE`]; see [`Session::inbox_with`].
    pub async fn inbox(&mut self) -> Result<Vec<InboxItem>> {
        let deadline = DEFAULT_INBOX_DEADLINE.max(self.timeouts.io * 2);
        self.inbox_with(DEFAULT_INBOX_LIMIT, deadline).await
    }

    /// Lists the `limit` newest messages (highest ids), in ascending id order like the
    /// server's list. Each one costs a `head` fetch, newest first, so the whole call is
    /// bounded by `deadline`: a list not received by then is [`ClientError::Timeout`];
    /// messages whose head was not fetched by then are listed with an `error` saying so.
    pub async fn inbox_with(&mut self, limit: usize, deadline: Duration) -> Result<Vec<InboxItem>> {
        const LIST_STEP: &str = "listing the mailbox (overall inbox deadline)";
        let until = tokio::time::Instant::now() + deadline;
        let req = self.signed(
            MboxRequest::list(&self.address.account, unix_now()),
            MboxKind::List,
        )?;
        let conn = self.conn().await?;
        let peer = conn.peer();
        let late = || ClientError::Timeout {
            step: LIST_STEP,
            after: deadline,
            peer,
        };
        let r = if tokio::time::Instant::now() >= until {
            Err(late())
        } else {
            match tokio::time::timeout_at(until, conn.mbox_list(&req)).await {
                Ok(r) => r,
                Err(_) => Err(late()),
            }
        };
        let mut entries = self.after(r).await?;
        // Newest first, so that the deadline (or the limit) leaves out the oldest.
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        entries.truncate(limit);
        let mut items = Vec::with_capacity(entries.len());
        let mut late = false;
        for e in entries {
            let from = format!("{}@{}", e.src_account, e.src_domain);
            let mut item = InboxItem {
                id: e.id,
                from,
                subject: String::new(),
                timestamp: e.received,
                received: e.received,
                size: e.size,
                attachments: e.attachment_count,
                legacy: false,
                error: None,
            };
            late = late || tokio::time::Instant::now() >= until;
            if late {
                item.error = Some(format!(
                    "not fetched: the inbox took longer than {deadline:?}"
                ));
                items.push(item);
                continue;
            }
            let req = self.signed(
                MboxRequest::fetch(&self.address.account, unix_now(), e.id, FetchPart::Head),
                MboxKind::Fetch,
            )?;
            let conn = self.conn().await?;
            let head = match tokio::time::timeout_at(until, conn.mbox_fetch(&req)).await {
                Ok(r) => match self.after(r).await {
                    Ok(h) => Some(h),
                    // Deleted meanwhile: skip it.
                    Err(ClientError::NoSuchMessage { .. }) => continue,
                    Err(e) if e.kind() == ErrorKind::Mailbox => return Err(e),
                    Err(e) if matches!(e.kind(), ErrorKind::Protocol | ErrorKind::Timeout) => {
                        return Err(e);
                    }
                    Err(_) => None,
                },
                Err(_) => {
                    // Cut off mid-reply: the connection cannot be reused.
                    if let Some(c) = self.conn.take() {
                        c.close(None).await;
                    }
                    late = true;
                    item.error = Some(format!(
                        "not fetched: the inbox took longer than {deadline:?}"
                    ));
                    items.push(item);
                    continue;
                }
            };
            match head.as_deref().map(|h| self.open_body(e.id, h, true)) {
                Some(Ok(body)) => match body {
                    Body::Internal(ib) => {
                        item.subject = ib.subject;
                        item.timestamp = u64::from(ib.timestamp);
                    }
                    Body::Legacy(t) => {
                        item.legacy = true;
                        item.subject = t.lines().next().unwrap_or("").chars().take(60).collect();
                    }
                },
                Some(Err(err)) => item.error = Some(err.to_string()),
                None => item.error = Some("could not fetch".into()),
            }
            items.push(item);
        }
        items.sort_unstable_by_key(|i| i.id);
        Ok(items)
    }

    fn open_body(&self, id: u64, bytes: &[u8], head: bool) -> Result<Body> {
        let bad = |d: String| ClientError::BadMessage { id, detail: d };
        let m = parse_stored(bytes, head).map_err(bad)?;
        let plain = cmtp_crypto::open_for(m.envelope.version, m.body, self.keys()?)
            .map_err(|e| bad(format!("the body does not open: {e}")))?;
        Ok(Body::decode(&plain))
    }

    /// Fetches message `id` in full, verifies the server's signature, opens body and
    /// attachments.
    pub async fn read(&mut self, id: u64) -> Result<ReadMessage> {
        self.read_with(id, &mut crate::conn::NoProgress).await
    }

    /// [`Session::read`], reporting the download to `progress` (the bytes of the
    /// stored message as they arrive).
    pub async fn read_with(&mut self, id: u64, progress: &mut dyn Progress) -> Result<ReadMessage> {
        let req = self.signed(
            MboxRequest::fetch(&self.address.account, unix_now(), id, FetchPart::Full),
            MboxKind::Fetch,
        )?;
        let conn = self.conn().await?;
        let r = conn.mbox_fetch_with(&req, progress).await;
        let bytes = self.after(r).await?;
        let bad = |d: String| ClientError::BadMessage { id, detail: d };
        let m = parse_stored(&bytes, false).map_err(bad)?;
        let keys = self.keys()?;
        let plain = cmtp_crypto::open_for(m.envelope.version, m.body, keys)
            .map_err(|e| bad(format!("the body does not open: {e}")))?;
        let mut attachments = Vec::with_capacity(m.attachments.len());
        for (i, a) in m.attachments.iter().enumerate() {
            let mut p = cmtp_crypto::open_for(m.envelope.version, a, keys)
                .map_err(|e| bad(format!("attachment {} does not open: {e}", i + 1)))?;
            // `file_name NUL data`, split in place: a multi-MiB attachment is not copied.
            let n = p
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad(format!("attachment {}: no NUL after the file name", i + 1)))?;
            let name = String::from_utf8_lossy(&p[..n]).into_owned();
            let mut data = std::mem::take(&mut *p);
            data.drain(..=n);
            attachments.push(ReceivedAttachment { name, data });
        }
        let env = &m.envelope;
        let dest_domain = if env.dest_domain.is_empty() {
            self.address.domain.clone()
        } else {
            env.dest_domain.clone()
        };
        let mut out = ReadMessage {
            id,
            from: format!("{}@{}", env.src_account, env.src_domain),
            to: format!("{}@{}", env.dest_account, dest_domain),
            subject: String::new(),
            reply_to: String::new(),
            cc: Vec::new(),
            timestamp: 0,
            text: String::new(),
            legacy: false,
            log: log_entries(m.log),
            attachments,
        };
        match Body::decode(&plain) {
            Body::Internal(ib) => {
                out.subject = ib.subject;
                out.reply_to = ib.reply_to;
                out.cc = ib.cc;
                out.timestamp = u64::from(ib.timestamp);
                out.text = ib.text;
            }
            Body::Legacy(t) => {
                out.legacy = true;
                out.text = t;
            }
        }
        Ok(out)
    }

    /// Deletes message `id`.
    pub async fn delete(&mut self, id: u64) -> Result<()> {
        let req = self.signed(
            MboxRequest::delete(&self.address.account, unix_now(), id),
            MboxKind::Delete,
        )?;
        let conn = self.conn().await?;
        let r = conn.mbox_delete(&req).await;
        self.after(r).await
    }
}
