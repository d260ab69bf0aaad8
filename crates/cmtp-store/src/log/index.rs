//! The in-memory index, rebuilt from the log on open: mailbox → id → entry, with running
//! totals (O(1) usage for quotas) and the log's space accounting.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::relay_ids::RelayIds;
use crate::{MessageInfo, MessageMeta};

/// Where a message's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loc {
    /// Inline in a segment, starting at this file offset.
    Inline { segment: u64, offset: u64 },
    /// In `blobs/<file as 16 hex digits>`.
    Blob { file: u64 },
}

/// One live message in the index. The mailbox name is the map key (shared by all its
/// entries), and the id is the inner key: neither is copied here.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) received: u64,
    pub(super) size: u64,
    pub(super) version: u32,
    pub(super) attachment_count: u32,
    pub(super) body_end: u64,
    pub(super) src_account: Box<str>,
    pub(super) src_domain: Box<str>,
    pub(super) loc: Loc,
    /// Bytes of its record in the log (header + payload).
    pub(super) rec_len: u64,
    /// Note and relay id, boxed: most messages have neither (8 bytes then).
    pub(super) extra: Option<Box<Extra>>,
}

/// The rarer parts of an entry.
#[derive(Debug, Clone, Default)]
pub(super) struct Extra {
    pub(super) note: Box<[u8]>,
    pub(super) relay_id: Option<[u8; 16]>,
    /// Bytes of the Note record that set `note` (0 if it came with the message).
    pub(super) note_rec: u64,
}

impl Entry {
    pub(super) fn new(info: MessageInfo, loc: Loc, rec_len: u64) -> Self {
        let m = info.meta;
        let extra = (!m.note.is_empty() || m.relay_id.is_some()).then(|| {
            Box::new(Extra {
                note: m.note.into_boxed_slice(),
                relay_id: m.relay_id,
                note_rec: 0,
            })
        });
        Self {
            received: info.received,
            size: info.size,
            version: m.version,
            attachment_count: m.attachment_count,
            body_end: m.body_end,
            src_account: m.src_account.into_boxed_str(),
            src_domain: m.src_domain.into_boxed_str(),
            loc,
            rec_len,
            extra,
        }
    }

    /// Log bytes this entry keeps live: its record and the Note record of its note.
    pub(super) fn live_len(&self) -> u64 {
        self.rec_len + self.extra.as_ref().map_or(0, |x| x.note_rec)
    }

    pub(super) fn info(&self, id: u64, mailbox: &str) -> MessageInfo {
        MessageInfo {
            id,
            received: self.received,
            size: self.size,
            meta: MessageMeta {
                mailbox: mailbox.to_owned(),
                src_account: self.src_account.to_string(),
                src_domain: self.src_domain.to_string(),
                version: self.version,
                attachment_count: self.attachment_count,
                body_end: self.body_end,
                note: self
                    .extra
                    .as_ref()
                    .map_or_else(Vec::new, |x| x.note.to_vec()),
                relay_id: self.extra.as_ref().and_then(|x| x.relay_id),
            },
        }
    }
}

/// One mailbox's live messages and running totals (O(1) usage for quotas).
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    pub(super) messages: BTreeMap<u64, Entry>,
    /// Sum of the messages' sizes.
    pub(super) bytes: u64,
}

/// The in-memory index, rebuilt from the log on open.
#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) mailboxes: HashMap<Arc<str>, Mailbox>,
    /// Per mailbox, the largest id seen in any of its records (messages and tombstones),
    /// kept after the mailbox empties: each mailbox has its own id sequence and an id is
    /// never reused in it.
    pub(super) last_ids: HashMap<Arc<str>, u64>,
    /// Segment number → bytes known valid (scanned or written).
    pub(super) segments: BTreeMap<u64, u64>,
    pub(super) live_bytes: u64,
    pub(super) dead_bytes: u64,
    /// Live messages in blob files, and the sum of their sizes.
    pub(super) blobs: u64,
    pub(super) blob_bytes: u64,
    /// Read-only mode: where the next incremental scan resumes.
    pub(super) scan_seg: u64,
    pub(super) scan_off: u64,
    /// Relay ids of the messages committed within the window, deleted or not.
    pub(super) relay_ids: RelayIds,
}

impl Index {
    /// An index for a store remembering relay ids for `relay_window` seconds.
    pub(super) fn new(relay_window: u64) -> Self {
        Self {
            relay_ids: RelayIds::new(relay_window),
            ..Self::default()
        }
    }

    /// Raises `mailbox`'s last used id to `id`.
    fn saw_id(&mut self, mailbox: &str, id: u64) {
        match self.last_ids.get_mut(mailbox) {
            Some(last) => *last = (*last).max(id),
            None => {
                self.last_ids.insert(Arc::from(mailbox), id);
            }
        }
    }

    pub(super) fn apply_message(&mut self, info: MessageInfo, loc: Loc, rec_len: u64) {
        self.saw_id(&info.meta.mailbox, info.id);
        if let Some(r) = info.meta.relay_id {
            self.relay_ids.insert(r, info.received);
        }
        self.live_bytes += rec_len;
        if matches!(loc, Loc::Blob { .. }) {
            self.blobs += 1;
            self.blob_bytes += info.size;
        }
        let mb = match self.mailboxes.get_mut(info.meta.mailbox.as_str()) {
            Some(mb) => mb,
            None => self
                .mailboxes
                .entry(Arc::from(info.meta.mailbox.as_str()))
                .or_default(),
        };
        let id = info.id;
        let entry = Entry::new(info, loc, rec_len);
        mb.bytes += entry.size;
        if let Some(old) = mb.messages.insert(id, entry) {
            // Only a corrupt log repeats an id; keep the totals equal to the entries.
            mb.bytes -= old.size;
            self.live_bytes -= old.live_len();
            self.dead_bytes += old.live_len();
            if matches!(old.loc, Loc::Blob { .. }) {
                self.blobs -= 1;
                self.blob_bytes -= old.size;
            }
        }
    }

    /// Applies a tombstone; returns the removed entry, if it was live.
    pub(super) fn apply_delete(&mut self, id: u64, mailbox: &str, rec_len: u64) -> Option<Entry> {
        self.saw_id(mailbox, id);
        self.dead_bytes += rec_len;
        let mb = self.mailboxes.get_mut(mailbox)?;
        let e = mb.messages.remove(&id)?;
        mb.bytes -= e.size;
        if mb.messages.is_empty() {
            self.mailboxes.remove(mailbox);
        }
        self.live_bytes -= e.live_len();
        self.dead_bytes += e.live_len();
        if matches!(e.loc, Loc::Blob { .. }) {
            self.blobs -= 1;
            self.blob_bytes -= e.size;
        }
        Some(e)
    }

    /// Applies a Note record of `rec_len` bytes; `false` (and the record is dead bytes)
    /// if the message is not live. The Note record it supersedes, if any, is dead bytes;
    /// the message's own record stays live (its data and other fields are still used).
    pub(super) fn apply_note(
        &mut self,
        id: u64,
        mailbox: &str,
        note: Vec<u8>,
        rec_len: u64,
    ) -> bool {
        let Some(e) = self
            .mailboxes
            .get_mut(mailbox)
            .and_then(|mb| mb.messages.get_mut(&id))
        else {
            self.dead_bytes += rec_len;
            return false;
        };
        let x = e.extra.get_or_insert_with(Box::default);
        self.dead_bytes += x.note_rec;
        self.live_bytes = self.live_bytes - x.note_rec + rec_len;
        x.note = note.into_boxed_slice();
        x.note_rec = rec_len;
        true
    }

    pub(super) fn get(&self, mailbox: &str, id: u64) -> Option<&Entry> {
        self.mailboxes.get(mailbox)?.messages.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, mailbox: &str) -> MessageInfo {
        MessageInfo {
            id,
            received: 1,
            size: 10 * id,
            meta: MessageMeta {
                mailbox: mailbox.into(),
                src_account: "alice".into(),
                src_domain: "example.org".into(),
                version: 2,
                attachment_count: 0,
                body_end: 3,
                note: Vec::new(),
                relay_id: None,
            },
        }
    }

    /// Index entries share their mailbox's name instead of each holding a copy, and keep
    /// per-mailbox totals.
    #[test]
    fn entries_share_the_mailbox_name() {
        let mut index = Index::default();
        for id in 1..=50 {
            index.apply_message(info(id, "bob"), Loc::Blob { file: id }, 100);
        }
        index.apply_message(
            info(51, "carol"),
            Loc::Inline {
                segment: 1,
                offset: 16,
            },
            100,
        );
        let (name, mb) = index.mailboxes.get_key_value("bob").unwrap();
        assert_eq!(
            Arc::strong_count(name),
            1,
            "entries hold copies of the name"
        );
        assert_eq!(mb.messages.len(), 50);
        assert_eq!(mb.bytes, (1..=50).map(|i| 10 * i).sum::<u64>());
        assert_eq!((index.blobs, index.blob_bytes), (50, mb.bytes));
        // No per-entry mailbox string: an entry is its fixed fields, two short strings
        // and one pointer for the rarer note and relay id.
        assert!(
            std::mem::size_of::<Entry>() <= 104,
            "{}",
            std::mem::size_of::<Entry>()
        );
        assert_eq!(index.get("bob", 7).unwrap().info(7, "bob"), info(7, "bob"));
        assert!(index.apply_delete(7, "bob", 30).is_some());
        let mb = &index.mailboxes["bob"];
        assert_eq!(
            (mb.messages.len(), mb.bytes),
            (49, (1..=50).map(|i| 10 * i).sum::<u64>() - 70)
        );
        assert_eq!(index.blobs, 49);
        assert!(index.apply_delete(51, "carol", 30).is_some());
        assert!(!index.mailboxes.contains_key("carol"));
        assert_eq!(index.last_ids["bob"], 50);
        assert_eq!(
            index.last_ids["carol"], 51,
            "an emptied mailbox keeps its last id"
        );
    }

    /// Live and dead bytes always add up to the records applied: a Note makes the one it
    /// supersedes dead, a delete kills the message's record and its Note, a Note for a
    /// message that is not live is dead at once.
    #[test]
    fn notes_and_their_byte_accounting() {
        let mut index = Index::default();
        let mut m = info(1, "bob");
        m.meta.relay_id = Some([9; 16]);
        index.apply_message(m, Loc::Blob { file: 1 }, 100);
        assert!(index.apply_note(1, "bob", b"one".to_vec(), 40));
        assert_eq!((index.live_bytes, index.dead_bytes), (140, 0));
        assert!(index.apply_note(1, "bob", b"two".to_vec(), 41));
        assert_eq!((index.live_bytes, index.dead_bytes), (141, 40));
        let got = index.get("bob", 1).unwrap().info(1, "bob");
        assert_eq!(
            (got.meta.note.as_slice(), got.meta.relay_id),
            (&b"two"[..], Some([9; 16]))
        );
        assert!(!index.apply_note(2, "bob", b"x".to_vec(), 30));
        assert!(!index.apply_note(1, "carol", b"x".to_vec(), 30));
        assert_eq!((index.live_bytes, index.dead_bytes), (141, 100));
        assert!(index.apply_delete(1, "bob", 20).is_some());
        assert_eq!((index.live_bytes, index.dead_bytes), (0, 261));
        assert!(!index.apply_note(1, "bob", b"late".to_vec(), 30));
        assert_eq!((index.live_bytes, index.dead_bytes), (0, 291));
        // The relay id outlives the message.
        assert!(index.relay_ids.contains(&[9; 16], 1));
    }
}
