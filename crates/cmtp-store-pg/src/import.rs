//! [`cmtp_store::StoreImport`]: the target of `cmtpd store copy`.

use cmtp_store::{MessageInfo, PeerKey, Result, StoreImport, ensure_path_safe, validate_mailbox};

use crate::state::i64_of;
use crate::{PgDelivery, PgStore};

impl StoreImport for PgStore {
    fn is_empty(&self) -> Result<bool> {
        let sh = self.shared.clone();
        self.bridge.block_store(async move {
            let what = "checking that the database is empty";
            let c = sh.conn(what).await?;
            let r = c
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM users)
                        AND NOT EXISTS (SELECT 1 FROM mailboxes)
                        AND NOT EXISTS (SELECT 1 FROM messages)
                        AND NOT EXISTS (SELECT 1 FROM peers)",
                    &[],
                )
                .await
                .map_err(|e| sh.pg(what, e))?;
            Ok(r.get(0))
        })
    }

    async fn import(&self, delivery: PgDelivery, info: MessageInfo) -> Result<()> {
        delivery.import(info).await
    }

    async fn reserve_ids(&self, mailbox: &str, last_id: u64) -> Result<()> {
        validate_mailbox(mailbox)?;
        let (sh, mb, last) = (self.shared.clone(), mailbox.to_owned(), i64_of(last_id));
        self.bridge
            .run(async move {
                let what = "reserving a mailbox's ids";
                let c = sh.conn(what).await?;
                c.execute(
                    "INSERT INTO mailboxes (name, last_id, messages, bytes) VALUES ($1, $2, 0, 0)
                     ON CONFLICT (name) DO UPDATE
                         SET last_id = GREATEST(mailboxes.last_id, EXCLUDED.last_id)",
                    &[&mb, &last],
                )
                .await
                .map_err(|e| sh.pg(what, e))?;
                Ok(())
            })
            .await
    }

    async fn import_relay_ids(&self, ids: Vec<([u8; 16], u64)>) -> Result<()> {
        let sh = self.shared.clone();
        self.bridge
            .run(async move {
                let what = "importing relay ids";
                let c = sh.conn(what).await?;
                let keys: Vec<&[u8]> = ids.iter().map(|(k, _)| k.as_slice()).collect();
                let at: Vec<i64> = ids.iter().map(|(_, t)| i64_of(*t)).collect();
                c.execute(
                    "INSERT INTO relay_ids (relay_id, received)
                     SELECT * FROM unnest($1::bytea[], $2::bigint[])
                     ON CONFLICT (relay_id) DO UPDATE
                         SET received = GREATEST(relay_ids.received, EXCLUDED.received)",
                    &[&keys, &at],
                )
                .await
                .map_err(|e| sh.pg(what, e))?;
                Ok(())
            })
            .await
    }

    fn import_peer(&self, domain: &str, peer: Option<&PeerKey>, tls: bool) -> Result<()> {
        let d = domain.to_ascii_lowercase();
        ensure_path_safe(&d)?;
        let key = peer.map(|p| p.key.to_vec());
        let pinned = peer.map(|p| i64_of(p.pinned_at));
        let offered = peer.and_then(|p| p.offered.map(|(k, _)| k.to_vec()));
        let offered_at = peer.and_then(|p| p.offered.map(|(_, t)| i64_of(t)));
        let sh = self.shared.clone();
        self.bridge.block_store(async move {
            let what = "importing a peer record";
            let c = sh.conn(what).await?;
            c.execute(
                "INSERT INTO peers (domain, key, pinned_at, offered_key, offered_at, tls)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (domain) DO UPDATE SET key = EXCLUDED.key,
                     pinned_at = EXCLUDED.pinned_at, offered_key = EXCLUDED.offered_key,
                     offered_at = EXCLUDED.offered_at, tls = EXCLUDED.tls",
                &[&d, &key, &pinned, &offered, &offered_at, &tls],
            )
            .await
            .map_err(|e| sh.pg(what, e))?;
            Ok(())
        })
    }

    async fn finish(&self) -> Result<()> {
        let sh = self.shared.clone();
        self.bridge
            .run(async move {
                let what = "flushing the imported data";
                let c = sh.conn(what).await?;
                // A transaction that writes, committed synchronously: its WAL flush
                // covers every earlier asynchronous commit (the WAL is written in order).
                c.batch_execute(
                    "BEGIN; SET LOCAL synchronous_commit = on;
                     SELECT pg_current_xact_id(); COMMIT;",
                )
                .await
                .map_err(|e| sh.pg(what, e))?;
                Ok(())
            })
            .await
    }
}
