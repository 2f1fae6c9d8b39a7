-- The SQLite schema as it is today: what a new queue file gets, top to bottom.
-- A file written by an older prismq_queue is brought here by the numbered steps
-- in migrations/ instead; tests/test_schema.py checks that both roads end
-- in the same schema. Change this file and add a step, always both.
--
-- Every query that looks for ready work repeats "status = 'queued'" literally
-- (see sqlite.sql), so that SQLite can use the partial indexes below: a claim
-- then costs an index lookup, however many finished rows the table holds.

CREATE TABLE prismq_tasks (
    id              INTEGER PRIMARY KEY,
    type            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    run_at          REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    created_at      REAL    NOT NULL,
    lease_until     REAL,
    token           INTEGER,
    worker_id       TEXT,
    result          TEXT,
    error           TEXT,
    idempotency_key TEXT,
    started_at      REAL,
    finished_at     REAL
);

-- Queued rows by level, (priority, run_at, id): every strategy walks it level
-- by level, and a level full of delayed tasks is never scanned past.
CREATE INDEX prismq_ready_priority ON prismq_tasks (priority, run_at, id) WHERE status = 'queued';
-- Queued rows by due time, with their level: WEIGHTED_RANDOM finds the levels
-- that hold due work by reading the due rows when there are few of them,
-- instead of walking every level, and the next due time is one seek. The cost:
-- an enqueue maintains three B-trees (the table and these two indexes).
CREATE INDEX prismq_ready_time ON prismq_tasks (run_at, priority) WHERE status = 'queued';
-- Lease recovery finds expired leases without looking at other rows.
CREATE INDEX prismq_leases ON prismq_tasks (lease_until) WHERE status = 'running';
-- One unfinished task per idempotency key; the index itself settles races.
CREATE UNIQUE INDEX prismq_idempotency ON prismq_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running');
-- No index over finished rows: every acknowledgement would pay an insert into
-- it, and purge() and stats() are rare enough to scan the table.

-- The largest id ever given, so that no id is given twice: SQLite gives a new
-- row the largest id present plus one, so once purge() deleted the newest tasks
-- their ids would come back, and cancel(old_id) would cancel somebody else's
-- task. AUTOINCREMENT would do the same at the cost of a write to
-- sqlite_sequence per inserted row (+7% instructions per task in a drain);
-- this floor is written only by purge(), the one statement that deletes rows.
CREATE TABLE prismq_id_floor (id INTEGER NOT NULL);
INSERT INTO prismq_id_floor (id) VALUES (0);
