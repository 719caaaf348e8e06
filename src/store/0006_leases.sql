-- imapferry state store, schema version 6: leases, so that processes sharing the store (a fleet of
-- proxies on one PostgreSQL) do each piece of work once (see src/store/mod.rs and migrate/lease.rs).
-- Same SQL subset as schema.sql; never edited once released.

-- `name` says what the work is ("folder:<account>:<NEW folder>", "journal:<account>",
-- "sweep:<account>"); `holder` the process doing it; `expires` (unix milliseconds) when another
-- process may take it over if the holder has not renewed it (it died).
CREATE TABLE leases (
    name    TEXT NOT NULL PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);
