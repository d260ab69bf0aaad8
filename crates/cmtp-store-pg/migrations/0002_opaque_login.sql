-- Cipher Mail schema, version 2: each user's OPAQUE login (docs/protocol.md D8), bytes
-- opaque to the store; NULL for an account that logs in the CMTP/1 way.
ALTER TABLE users ADD COLUMN opaque_login bytea;
