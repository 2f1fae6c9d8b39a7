-- Version 1, as prismq_queue 0.1.0 created it. Never run on a real file (an
-- empty file gets schema.sql at once): it is the base from which the tests
-- build the oldest file a user can have, to migrate it with the steps below.
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
CREATE INDEX prismq_ready_due ON prismq_tasks (run_at, id) WHERE status = 'queued';
CREATE INDEX prismq_ready_priority ON prismq_tasks (priority, run_at, id) WHERE status = 'queued';
CREATE INDEX prismq_leases ON prismq_tasks (lease_until) WHERE status = 'running';
CREATE UNIQUE INDEX prismq_idempotency ON prismq_tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running');
CREATE INDEX prismq_finished ON prismq_tasks (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
