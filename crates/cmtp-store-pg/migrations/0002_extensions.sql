-- Cipher Mail schema, version 2: what the wire-security extensions keep.
-- Each user's OPAQUE login (docs/protocol.md D8), bytes opaque to the store; NULL for an
-- account that logs in the CMTP/1 way.
ALTER TABLE users ADD COLUMN opaque_login bytea;
-- Whether a remote domain's server was seen offering TLS (D7): a later connection
-- without it is a downgrade. Kept across key changes.
ALTER TABLE peers ADD COLUMN tls boolean NOT NULL DEFAULT false;
