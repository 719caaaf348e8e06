-- imapferry state store, schema version 5: the proxy's write-ahead mark (see src/store/mod.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- Set (unix seconds) before the proxy sends a user's write to NEW while none was in flight, and
-- cleared once every such write is answered and journaled. Found set by a process that did not set
-- it, it says a predecessor died between NEW doing a write and journaling it: OLD is reconciled.
ALTER TABLE accounts ADD COLUMN writes_in_flight BIGINT;
