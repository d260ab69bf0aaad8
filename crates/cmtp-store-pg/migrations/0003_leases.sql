-- Cipher Mail schema, version 3: leases of the relay queue shared by several nodes
-- (docs/scale-out.md). A message is delivered by the node whose lease is live; a dead
-- node's lease simply ends, and another node claims the message.
ALTER TABLE messages ADD COLUMN lease_owner text;
ALTER TABLE messages ADD COLUMN lease_until bigint;
