//! The catalog's schema and its numbered migrations. The number of
//! migrations applied is `PRAGMA user_version` on SQLite and the one row of
//! `coffer_schema` on PostgreSQL; each migration runs in its own
//! transaction together with the bump of that number, so a crash leaves the
//! database at one version or the next, never between. A database whose
//! version is higher than this build knows was written by a newer coffer and
//! is refused rather than guessed at.
//!
//! The migrations are written once, in SQLite's DDL; PostgreSQL runs them
//! as `db::postgres_ddl` translates them. Several coffer processes may open
//! a new PostgreSQL catalog at once: each migration is taken under an
//! advisory lock and re-reads the version first, so each runs once.

use super::CatalogError;
use super::db::{Db, MIGRATION_LOCK, args, postgres_ddl};

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`. Append only: a released
/// migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema. Times are RFC 3339 UTC text with microseconds,
    // so text order is time order.
    r#"
CREATE TABLE vms (
    uuid        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- the source (host or vCenter) it was seen on; NULL when known only
    -- from a repository
    source      TEXT,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
);

CREATE TABLE points (
    point_id     TEXT PRIMARY KEY,
    vm_uuid      TEXT NOT NULL REFERENCES vms(uuid),
    created      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('full', 'incremental')),
    -- not a foreign key: a parent may be pruned while its child lives on
    parent       TEXT,
    -- what was achieved: application, crash, image
    consistency  TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL
);
CREATE INDEX points_by_vm ON points(vm_uuid, created);

CREATE TABLE point_disks (
    point_id          TEXT NOT NULL REFERENCES points(point_id) ON DELETE CASCADE,
    device_key        INTEGER NOT NULL,
    label             TEXT NOT NULL,
    size_bytes        INTEGER NOT NULL,
    chunk_size_bytes  INTEGER NOT NULL,
    index_sha256      TEXT NOT NULL,
    change_id         TEXT,
    PRIMARY KEY (point_id, device_key)
);

-- One row per point and tier the catalog has seen it on. Not a foreign key
-- to points: a manifest that cannot be read still names a copy (its VM and
-- id come from its path) though nothing else about the point is known.
CREATE TABLE copies (
    point_id      TEXT NOT NULL,
    vm_uuid       TEXT NOT NULL,
    tier          TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('present', 'missing', 'corrupt')),
    -- why a copy is corrupt
    detail        TEXT,
    locked_until  TEXT,
    first_seen    TEXT NOT NULL,
    last_seen     TEXT NOT NULL,
    PRIMARY KEY (point_id, tier)
);
CREATE INDEX copies_by_tier ON copies(tier, state);

-- The last refresh of each tier: the planner never prunes on a tier whose
-- listing failed.
CREATE TABLE tier_refreshes (
    tier          TEXT PRIMARY KEY,
    refreshed_at  TEXT NOT NULL,
    ok            INTEGER NOT NULL,
    error         TEXT
);

-- Verifications and drills: `verify` re-reads chunks, `restore` and `boot`
-- are drills and measure how long the restore took.
CREATE TABLE verifications (
    id               INTEGER PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('verify', 'restore', 'boot')),
    point_id         TEXT NOT NULL REFERENCES points(point_id),
    tier             TEXT NOT NULL,
    drill            TEXT,
    started          TEXT NOT NULL,
    finished         TEXT,
    ok               INTEGER,
    detail           TEXT,
    restore_seconds  REAL
);
CREATE INDEX verifications_by_point ON verifications(point_id, started);

CREATE TABLE runs (
    run_id    TEXT PRIMARY KEY,
    command   TEXT NOT NULL,
    started   TEXT NOT NULL,
    finished  TEXT,
    outcome   TEXT
);

CREATE TABLE actions (
    id        INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL REFERENCES runs(run_id),
    seq       INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    target    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    state     TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    started   TEXT,
    finished  TEXT,
    outcome   TEXT,
    error     TEXT,
    UNIQUE (run_id, seq)
);

CREATE TABLE alerts (
    id        INTEGER PRIMARY KEY,
    raised    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    target    TEXT NOT NULL,
    message   TEXT NOT NULL,
    resolved  TEXT
);
"#,
    // 2 (planner: verification facts): data verification (every chunk read
    // back and proven) and guest checks (fsck, boot, scripts) are separate
    // facts. `ok` stays the drill's overall result; `data_ok` alone says
    // whether a copy is damaged, `guest_ok` whether the guest checks passed.
    // Earlier rows: a verify is a data fact; a drill that passed proved
    // both; a restore drill that failed in its restore proved damage; any
    // other failed drill failed its guest checks and says nothing about the
    // data.
    r#"
ALTER TABLE verifications ADD COLUMN data_ok INTEGER;
ALTER TABLE verifications ADD COLUMN guest_ok INTEGER;
ALTER TABLE verifications ADD COLUMN guest_detail TEXT;
UPDATE verifications SET data_ok = ok WHERE kind = 'verify';
UPDATE verifications SET data_ok = 1, guest_ok = 1 WHERE kind != 'verify' AND ok = 1;
UPDATE verifications SET data_ok = 0
    WHERE kind = 'restore' AND ok = 0 AND detail LIKE 'restore failed:%';
UPDATE verifications SET guest_ok = 0, guest_detail = detail
    WHERE kind != 'verify' AND ok = 0
      AND detail NOT LIKE 'restore failed:%'
      AND detail NOT LIKE 'restore onto the drill host failed%';
CREATE INDEX verifications_by_copy ON verifications(point_id, tier, started);
"#,
    // 3 (VM identity and visibility): a VM is its instance UUID *and* its
    // source, since two sources may hold VMs with the same instance UUID;
    // each point keeps the source and VM name its manifest records (NULL
    // for manifests from before), so the catalog remembers every VM it
    // protected even when its source cannot be read.
    r#"
ALTER TABLE points ADD COLUMN source TEXT;
ALTER TABLE points ADD COLUMN vm_name TEXT;
"#,
    // 4 (CBT reset): each disk of a point keeps the datastore path it was
    // read from, so the planner sees a disk that moved (Storage vMotion)
    // and resets its change tracking before the next full. NULL for points
    // recorded before.
    r#"
ALTER TABLE point_disks ADD COLUMN backing TEXT;
"#,
    // 5 (snapshot lifetime, area h6-consistency): how long each backup's
    // snapshot was open, from its CreateSnapshot task done to its
    // RemoveSnapshot task done (a delta grows while a snapshot is open).
    // Written after the snapshot is gone, so it lives here and not in the
    // point's manifest, which is committed before; a rebuilt catalog has
    // none for earlier points.
    r#"
CREATE TABLE snapshot_lifetimes (
    run_id    TEXT NOT NULL,
    vm_uuid   TEXT NOT NULL,
    vm_name   TEXT NOT NULL,
    snapshot  TEXT NOT NULL,
    -- the point the backup recorded
    point_id  TEXT NOT NULL,
    created   TEXT NOT NULL,
    removed   TEXT NOT NULL,
    PRIMARY KEY (run_id, vm_uuid, snapshot)
);
CREATE INDEX snapshot_lifetimes_by_point ON snapshot_lifetimes(point_id);
"#,
    // 6 (recovery times): how a boot drill brought the VM up ("restore" or
    // "instant") and how long its guest took to report a heartbeat, beside
    // `restore_seconds` (the time to services checked). NULL before.
    r#"
ALTER TABLE verifications ADD COLUMN heartbeat_seconds REAL;
ALTER TABLE verifications ADD COLUMN method TEXT;
"#,
    // 7 (recovery times): each restore onto a host and each instant
    // recovery an administrator ran, with its times to power-on and to the
    // guest's first heartbeat, for the reports. They happen outside runs
    // and are not in the repositories: a rebuilt catalog has none.
    r#"
CREATE TABLE recoveries (
    id                INTEGER PRIMARY KEY,
    vm_uuid           TEXT NOT NULL,
    vm_name           TEXT NOT NULL,
    point_id          TEXT NOT NULL,
    tier              TEXT NOT NULL,
    -- the source it was brought up on, and the new VM's name there
    source            TEXT NOT NULL,
    name              TEXT NOT NULL,
    -- "restore" (copied back) or "instant" (booted from the repository)
    method            TEXT NOT NULL,
    started           TEXT NOT NULL,
    power_on_seconds  REAL,
    -- NULL when it was not powered on or no heartbeat came
    heartbeat_seconds REAL
);
CREATE INDEX recoveries_by_vm ON recoveries(vm_uuid, started);
"#,
    // 8 (work shared between machines): the backups a coordinator
    // (`apply --distributed`) hands to workers (`coffer worker`) through a
    // PostgreSQL catalog. A worker claims a row under a lease it renews
    // while it works; the limits are counted over the rows claimed with a
    // live lease, so they hold across workers; a row whose lease ran out
    // is claimed again and its earlier attempt cleaned up. `lease_until` is
    // milliseconds since the epoch by the database server's clock, so the
    // workers' clocks need not agree. Unused on SQLite.
    r#"
CREATE TABLE work (
    id             INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    -- the plan's JSON form of the backup
    action         TEXT NOT NULL,
    source         TEXT NOT NULL,
    vm             TEXT NOT NULL,
    -- the limits' keys: the VM's ESXi host, its datastores (a JSON list)
    -- and the tier, with the limits the coordinator's policy set
    host           TEXT NOT NULL,
    datastores     TEXT NOT NULL,
    tier           TEXT NOT NULL,
    -- the tier's repository id as the coordinator opened it: a worker
    -- that opens another repository under that name refuses the backup
    repo_id        TEXT NOT NULL,
    max_host       INTEGER NOT NULL,
    max_datastore  INTEGER NOT NULL,
    max_tier       INTEGER NOT NULL,
    read_whole     INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'done', 'failed')),
    worker         TEXT,
    attempt        INTEGER NOT NULL,
    lease_until    INTEGER,
    queued         TEXT NOT NULL,
    started        TEXT,
    finished       TEXT,
    detail         TEXT,
    seconds        REAL,
    bytes_read     INTEGER,
    bytes_stored   INTEGER,
    -- what a worker did about an earlier attempt whose lease ran out
    recovered      TEXT,
    UNIQUE (run_id, seq)
);
CREATE INDEX work_by_state ON work(state, id);

CREATE TABLE workers (
    name       TEXT PRIMARY KEY,
    machine    TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started    TEXT NOT NULL,
    last_seen  TEXT NOT NULL
);
"#,
    // 9 (copies and drills for workers): a row may be a copy or a drill
    // besides a backup. A copy names the repository id of the tier it
    // reads, as `repo_id` names the one it writes, so a worker refuses a
    // tier that is not the coordinator's at either end.
    r#"
ALTER TABLE work ADD COLUMN repo_from TEXT;
"#,
    // 10 (planning from what changed): every write of what the planner
    // reads of a point (the point, its disks, a copy's state, lock or
    // first sight, a verification) appends the point's id to
    // `point_changes`, by trigger, so that planning re-reads only the
    // points changed since its last read (see `changes.rs`). `change_log`
    // names this log (a planner's saved read belongs to one catalog) and
    // how far it was pruned. A refresh that only moves a copy's
    // `last_seen` is not a change. PostgreSQL's form is in
    // `POSTGRES_MIGRATIONS`.
    r#"
CREATE TABLE point_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    point_id  TEXT NOT NULL,
    at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    nonce     INTEGER NOT NULL DEFAULT (random()),
    txid      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE change_log (
    id       TEXT NOT NULL,
    horizon  INTEGER NOT NULL
);
INSERT INTO change_log (id, horizon) VALUES (lower(hex(randomblob(16))), 0);
CREATE TRIGGER points_inserted AFTER INSERT ON points BEGIN
    INSERT INTO point_changes (point_id) VALUES (NEW.point_id);
END;
CREATE TRIGGER points_updated AFTER UPDATE ON points BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
    INSERT INTO point_changes (point_id) SELECT NEW.point_id WHERE NEW.point_id IS NOT OLD.point_id;
END;
CREATE TRIGGER points_deleted AFTER DELETE ON points BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
END;
CREATE TRIGGER point_disks_inserted AFTER INSERT ON point_disks BEGIN
    INSERT INTO point_changes (point_id) VALUES (NEW.point_id);
END;
CREATE TRIGGER point_disks_updated AFTER UPDATE ON point_disks BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
    INSERT INTO point_changes (point_id) SELECT NEW.point_id WHERE NEW.point_id IS NOT OLD.point_id;
END;
CREATE TRIGGER point_disks_deleted AFTER DELETE ON point_disks BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
END;
CREATE TRIGGER copies_inserted AFTER INSERT ON copies BEGIN
    INSERT INTO point_changes (point_id) VALUES (NEW.point_id);
END;
CREATE TRIGGER copies_updated AFTER UPDATE ON copies
    WHEN NEW.point_id IS NOT OLD.point_id OR NEW.tier IS NOT OLD.tier
      OR NEW.state IS NOT OLD.state OR NEW.locked_until IS NOT OLD.locked_until
      OR NEW.first_seen IS NOT OLD.first_seen BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
    INSERT INTO point_changes (point_id) SELECT NEW.point_id WHERE NEW.point_id IS NOT OLD.point_id;
END;
CREATE TRIGGER copies_deleted AFTER DELETE ON copies BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
END;
CREATE TRIGGER verifications_inserted AFTER INSERT ON verifications BEGIN
    INSERT INTO point_changes (point_id) VALUES (NEW.point_id);
END;
CREATE TRIGGER verifications_updated AFTER UPDATE ON verifications
    WHEN NEW.point_id IS NOT OLD.point_id OR NEW.tier IS NOT OLD.tier
      OR NEW.data_ok IS NOT OLD.data_ok OR NEW.started IS NOT OLD.started BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
    INSERT INTO point_changes (point_id) SELECT NEW.point_id WHERE NEW.point_id IS NOT OLD.point_id;
END;
CREATE TRIGGER verifications_deleted AFTER DELETE ON verifications BEGIN
    INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
END;
"#,
    // 11 (refresh reads what was written): a copy keeps its manifest as
    // the tier's listing last showed it when a refresh read it (size,
    // time, ETag or inode: `ObjectMeta::fingerprint`); a refresh reads a
    // manifest again only when the listing shows it otherwise, or when its
    // last read is older than `refresh::reread_after` (one to two weeks).
    // A copy's `last_seen` is from now on when its manifest was last read.
    r#"
ALTER TABLE copies ADD COLUMN manifest_seen TEXT;
"#,
];

/// Migrations whose PostgreSQL form is written by hand rather than
/// translated: triggers have no dialect the two share. By number.
const POSTGRES_MIGRATIONS: &[(u32, &str)] = &[(
    10,
    r#"
CREATE TABLE point_changes (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    point_id  TEXT COLLATE "C" NOT NULL,
    at        TEXT COLLATE "C" NOT NULL
              DEFAULT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    nonce     BIGINT NOT NULL DEFAULT floor((random() - 0.5) * 9.2e18)::bigint,
    -- the writing transaction: commits need not come in `seq` order here,
    -- so a reader also re-reads what was still uncommitted at its last read
    txid      BIGINT NOT NULL DEFAULT pg_current_xact_id()::text::bigint
);
CREATE INDEX point_changes_by_txid ON point_changes(txid);
CREATE TABLE change_log (
    id       TEXT COLLATE "C" NOT NULL,
    horizon  BIGINT NOT NULL
);
INSERT INTO change_log (id, horizon) VALUES (md5(random()::text || clock_timestamp()::text), 0);
CREATE FUNCTION coffer_point_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO point_changes (point_id) VALUES (OLD.point_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.point_id IS DISTINCT FROM OLD.point_id) THEN
        INSERT INTO point_changes (point_id) VALUES (NEW.point_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER points_changed AFTER INSERT OR UPDATE OR DELETE ON points
    FOR EACH ROW EXECUTE FUNCTION coffer_point_changed();
CREATE TRIGGER point_disks_changed AFTER INSERT OR UPDATE OR DELETE ON point_disks
    FOR EACH ROW EXECUTE FUNCTION coffer_point_changed();
CREATE TRIGGER copies_added AFTER INSERT OR DELETE ON copies
    FOR EACH ROW EXECUTE FUNCTION coffer_point_changed();
CREATE TRIGGER copies_updated AFTER UPDATE ON copies
    FOR EACH ROW WHEN (NEW.point_id IS DISTINCT FROM OLD.point_id
        OR NEW.tier IS DISTINCT FROM OLD.tier OR NEW.state IS DISTINCT FROM OLD.state
        OR NEW.locked_until IS DISTINCT FROM OLD.locked_until
        OR NEW.first_seen IS DISTINCT FROM OLD.first_seen)
    EXECUTE FUNCTION coffer_point_changed();
CREATE TRIGGER verifications_added AFTER INSERT OR DELETE ON verifications
    FOR EACH ROW EXECUTE FUNCTION coffer_point_changed();
CREATE TRIGGER verifications_updated AFTER UPDATE ON verifications
    FOR EACH ROW WHEN (NEW.point_id IS DISTINCT FROM OLD.point_id
        OR NEW.tier IS DISTINCT FROM OLD.tier OR NEW.data_ok IS DISTINCT FROM OLD.data_ok
        OR NEW.started IS DISTINCT FROM OLD.started)
    EXECUTE FUNCTION coffer_point_changed();
"#,
)];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The number of migrations applied to `db`.
pub fn version(db: &Db) -> Result<u32, CatalogError> {
    match db {
        Db::Sqlite(conn) => Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?),
        Db::Postgres(_) => {
            let v: Option<i64> = match db.query_one("SELECT version FROM coffer_schema", &[])? {
                Some(row) => row.get(0)?,
                None => None,
            };
            Ok(u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX))
        }
    }
}

fn set_version(db: &Db, v: u32) -> Result<(), CatalogError> {
    match db {
        Db::Sqlite(conn) => Ok(conn.pragma_update(None, "user_version", v)?),
        Db::Postgres(_) => {
            db.execute("UPDATE coffer_schema SET version = ?1", args![v])?;
            Ok(())
        }
    }
}

/// Brings `db` up to [`SCHEMA_VERSION`], or refuses a newer database.
pub fn migrate(db: &mut Db, path: &str) -> Result<(), CatalogError> {
    if let Db::Postgres(_) = db {
        // The version's own table, made once by whoever comes first.
        db.batch("BEGIN")?;
        let made = (|| {
            db.execute("SELECT pg_advisory_xact_lock(?1)", args![MIGRATION_LOCK])?;
            db.batch("CREATE TABLE IF NOT EXISTS coffer_schema (version BIGINT NOT NULL)")?;
            db.execute(
                "INSERT INTO coffer_schema (version) SELECT 0                  WHERE NOT EXISTS (SELECT 1 FROM coffer_schema)",
                &[],
            )?;
            db.batch("COMMIT")
        })();
        if let Err(e) = made {
            let _ = db.batch("ROLLBACK");
            return Err(e);
        }
    }
    loop {
        let step = db.transaction(|tx| {
            if let Db::Postgres(_) = tx {
                tx.execute("SELECT pg_advisory_xact_lock(?1)", args![MIGRATION_LOCK])?;
            }
            let found = version(tx)?;
            if found > SCHEMA_VERSION {
                return Err(CatalogError::NewerSchema {
                    path: path.to_string(),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            if found == SCHEMA_VERSION {
                return Ok(false);
            }
            let sql = MIGRATIONS[found as usize];
            let by_hand = POSTGRES_MIGRATIONS.iter().find(|(n, _)| *n == found + 1);
            let sql = match (tx, by_hand) {
                (Db::Sqlite(_), _) => sql.to_string(),
                (Db::Postgres(_), Some((_, sql))) => sql.to_string(),
                (Db::Postgres(_), None) => postgres_ddl(sql),
            };
            tx.batch(&sql).map_err(|source| CatalogError::Migration {
                version: found + 1,
                source: Box::new(source),
            })?;
            set_version(tx, found + 1)?;
            Ok(true)
        })?;
        if !step {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rusqlite::Connection;

    #[test]
    fn a_catalog_of_the_first_schema_keeps_its_drills_apart_from_its_data() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        // Verifications of points this test does not create.
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        // What an earlier coffer recorded: a verify that found damage, a
        // restore drill whose fsck failed (every chunk had been proven),
        // one whose restore failed, a boot drill that never reached its
        // host, and one that passed.
        conn.execute_batch(
            "INSERT INTO verifications (kind, point_id, tier, started, ok, detail) VALUES
               ('verify', 'a', 'local', 't1', 0, '3 damaged chunks'),
               ('restore', 'b', 'local', 't2', 0, '`e2fsck -fn x` failed (exit status: 8): ext2fs_open2: Bad magic number'),
               ('restore', 'c', 'local', 't3', 0, 'restore failed: chunk 00ff: digest mismatch'),
               ('boot', 'd', 'local', 't4', 0, 'restore onto the drill host failed: no host'),
               ('boot', 'e', 'local', 't5', 1, 'heartbeat passed');",
        )
        .unwrap();
        let mut db = Db::Sqlite(conn);
        migrate(&mut db, ":memory:").unwrap();
        let Db::Sqlite(conn) = db else { unreachable!() };
        let rows: Vec<(String, Option<bool>, Option<bool>)> = conn
            .prepare("SELECT point_id, data_ok, guest_ok FROM verifications ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |id: &str, data, guest| (id.to_string(), data, guest);
        assert_eq!(
            rows,
            [
                row("a", Some(false), None),
                row("b", None, Some(false)),
                row("c", Some(false), None),
                row("d", None, None),
                row("e", Some(true), Some(true)),
            ]
        );
    }
}
