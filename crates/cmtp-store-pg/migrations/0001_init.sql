-- Cipher Mail schema, version 1. Plain SQL; PostgreSQL-only parts are marked "PG:".

CREATE TABLE users (
    name       text   PRIMARY KEY,
    public_key bytea  NOT NULL CHECK (length(public_key) = 32),
    xzibit     bytea  NOT NULL,
    created    bigint NOT NULL
);

-- Pinned keys of remote servers; a row with a NULL key holds only a refused offer.
CREATE TABLE peers (
    domain      text   PRIMARY KEY,
    key         bytea  CHECK (length(key) = 32),
    pinned_at   bigint,
    offered_key bytea  CHECK (length(offered_key) = 32),
    offered_at  bigint
);

-- One row per mailbox: the id sequence (never reused) and the running quota totals,
-- both changed only in the transactions that add or delete its messages.
CREATE TABLE mailboxes (
    name     text   PRIMARY KEY,
    last_id  bigint NOT NULL,
    messages bigint NOT NULL,
    bytes    bigint NOT NULL
);

-- The bytes of a message live under a store-wide key (so chunks can be written before
-- the message has its per-mailbox id, which is given at commit).
CREATE SEQUENCE message_keys;

CREATE TABLE messages (
    mailbox          text   NOT NULL,
    id               bigint NOT NULL,
    key              bigint NOT NULL UNIQUE,
    received         bigint NOT NULL,
    size             bigint NOT NULL,
    src_account      text   NOT NULL,
    src_domain       text   NOT NULL,
    version          bigint NOT NULL,
    attachment_count bigint NOT NULL,
    body_end         bigint NOT NULL,
    note             bytea  NOT NULL,
    relay_id         bytea,
    PRIMARY KEY (mailbox, id)
);

-- 256 KiB per row; sealed ciphertext does not compress, so keep it out of line without
-- trying (PG: SET STORAGE EXTERNAL; elsewhere simply omit it).
CREATE TABLE message_chunks (
    key  bigint  NOT NULL,
    seq  integer NOT NULL,
    data bytea   NOT NULL,
    PRIMARY KEY (key, seq)
);
ALTER TABLE message_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
-- PG: vacuum the chunk table (and its TOAST table) after 1 % of it changed rather
-- than the default 20 %, so deleted mail's space is reused soon.
ALTER TABLE message_chunks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    toast.autovacuum_vacuum_scale_factor = 0.01
);

-- Large messages being received: chunks already written under `key`. The commit
-- removes the row; a row left by a dead node is swept (chunks and all) after a day.
CREATE TABLE uploads (
    key     bigint PRIMARY KEY,
    started bigint NOT NULL
);

-- Relay ids of messages committed in the dedup window (deleted or not).
CREATE TABLE relay_ids (
    relay_id bytea  PRIMARY KEY CHECK (length(relay_id) = 16),
    received bigint NOT NULL
);
CREATE INDEX relay_ids_received ON relay_ids (received);
