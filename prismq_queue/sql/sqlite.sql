-- SQL of the SQLite backend. Each statement is named by a "-- name:" line and
-- loaded by prismq_queue/sql/__init__.py; the backend code holds no SQL text.
--
-- Times are REAL seconds since the epoch, compared as numbers. Every query that
-- looks for ready work repeats "status = 'queued'" literally, so that SQLite
-- can use the partial indexes of sqlite/schema.sql: a claim then costs an index
-- lookup, however many finished rows the table holds. The schema and its
-- migration steps live in sqlite/.

-- name: read_version
-- The schema version is the file header's user_version: readable before
-- anything is written, so a file from a newer prismq_queue is left untouched.
PRAGMA user_version;

-- name: set_version
-- {version} is formatted in: a PRAGMA takes no bound parameters.
PRAGMA user_version = {version};

-- name: insert_task
INSERT INTO prismq_tasks (id, type, payload, priority, status, run_at, max_attempts, created_at, idempotency_key)
VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING;

-- name: insert_plain
-- Tasks without an idempotency key: SQLite gives each new row the largest id
-- plus one, so a batch inserted under the write lock gets consecutive ids.
INSERT INTO prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at, idempotency_key)
VALUES (?, ?, ?, 'queued', ?, ?, ?, ?);

-- name: insert_one
-- One task without an idempotency key, in one statement: its id (the largest
-- present or ever purged, plus one) is worked out in the statement itself, so a
-- single enqueue needs no id_range before it and no max_id check after it.
INSERT INTO prismq_tasks (id, type, payload, priority, status, run_at, max_attempts, created_at, idempotency_key)
VALUES ((SELECT MAX(COALESCE((SELECT MAX(id) FROM prismq_tasks), 0), id) + 1 FROM prismq_id_floor),
        ?, ?, ?, 'queued', ?, ?, ?, ?);

-- name: insert_claimed
-- The local hand-off (SQLiteBackend.insert_handed): one task inserted already
-- claimed, every column as claim_level would set it (running, attempt 1, the
-- claim's lease, token and worker, started ?10, the claim's time), but only if a
-- claim made at ?10 would take this task and nothing else: no queued task is due
-- (whatever the strategy, a claim may take it first) and no lease has expired (a
-- claim recovers it first); two seeks, prismq_ready_time and prismq_leases. Else
-- it inserts nothing (rowcount 0). One statement, so it runs without BEGIN and
-- COMMIT: SQLite takes the write lock as the statement starts, before it reads,
-- so the check and the insert are one transaction. Id as in insert_one.
INSERT INTO prismq_tasks (id, type, payload, priority, status, run_at, max_attempts, created_at,
                          attempts, lease_until, token, worker_id, started_at)
SELECT (SELECT MAX(COALESCE((SELECT MAX(id) FROM prismq_tasks), 0), id) + 1 FROM prismq_id_floor),
       ?1, ?2, ?3, 'running', ?4, ?5, ?6, 1, ?7, ?8, ?9, ?10
WHERE NOT EXISTS (SELECT 1 FROM prismq_tasks WHERE status = 'queued' AND run_at <= ?10)
  AND NOT EXISTS (SELECT 1 FROM prismq_tasks WHERE status = 'running' AND lease_until < ?10);

-- name: max_id
SELECT COALESCE(MAX(id), 0) FROM prismq_tasks;

-- name: id_range
-- The largest id present, and the largest purge() ever deleted.
SELECT COALESCE(MAX(id), 0), (SELECT id FROM prismq_id_floor) FROM prismq_tasks;

-- name: id_by_key
SELECT id FROM prismq_tasks
WHERE idempotency_key = ? AND idempotency_key IS NOT NULL AND status IN ('queued', 'running');

-- name: first_level
-- Priority levels are walked one index seek at a time (a loose index scan):
-- each claim then reads only the ready entries it takes, however many tasks
-- wait, delayed, at other levels.
SELECT MIN(priority) FROM prismq_tasks WHERE status = 'queued';

-- name: next_level
SELECT MIN(priority) FROM prismq_tasks WHERE status = 'queued' AND priority > ?;

-- name: ready_levels
-- WEIGHTED_RANDOM, first way to find the levels to draw from: walk the levels
-- that hold queued tasks, lowest first (one index seek each), and keep the
-- lowest :max_levels that hold a due task, with how many due tasks each holds
-- (counted up to :limit). The walk stops after :visits levels: a row with a
-- NULL priority says it reached the end; :max_levels rows say it found enough.
-- Fewer rows, none NULL: it was cut short by delayed levels (see due_levels).
WITH RECURSIVE levels (priority, n) AS (
    SELECT MIN(priority), 1 FROM prismq_tasks WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT MIN(priority) FROM prismq_tasks WHERE status = 'queued' AND priority > levels.priority), n + 1
    FROM levels WHERE levels.priority IS NOT NULL AND n < :visits
)
SELECT priority,
       (SELECT COUNT(*) FROM (SELECT 1 FROM prismq_tasks WHERE status = 'queued' AND priority = levels.priority
                              AND run_at <= :now LIMIT :limit))
FROM levels
WHERE priority IS NULL
   OR EXISTS (SELECT 1 FROM prismq_tasks WHERE status = 'queued' AND priority = levels.priority AND run_at <= :now)
LIMIT :max_levels;

-- name: due_levels
-- WEIGHTED_RANDOM, second way: read the due tasks themselves, in due-time
-- order from prismq_ready_time (index only), at most :rows of them, and count
-- them by level. When fewer than :rows come back, these are all the due tasks:
-- the levels are found at a cost that follows the due work, however many
-- levels hold only delayed tasks.
SELECT priority, COUNT(*) FROM (SELECT priority FROM prismq_tasks WHERE status = 'queued' AND run_at <= :now
                                ORDER BY run_at LIMIT :rows)
GROUP BY priority ORDER BY priority;

-- name: claim_level
-- PRIORITY and WEIGHTED_RANDOM: the first due tasks of one level, in one statement.
UPDATE prismq_tasks
SET status = 'running', attempts = attempts + 1, lease_until = :lease_until, token = :token,
    worker_id = :worker_id, started_at = :now
WHERE id IN (SELECT id FROM prismq_tasks WHERE status = 'queued' AND priority = :priority
             AND run_at <= :now ORDER BY run_at, id LIMIT :limit)
RETURNING id, type, payload, priority, attempts, max_attempts, run_at, created_at, idempotency_key;

-- name: level_heads_fifo
-- FIFO and LIFO: the candidates of one level, merged across levels in Python.
SELECT run_at, id FROM prismq_tasks WHERE status = 'queued' AND priority = ? AND run_at <= ?
ORDER BY run_at, id LIMIT ?;

-- name: level_heads_lifo
SELECT run_at, id FROM prismq_tasks WHERE status = 'queued' AND priority = ? AND run_at <= ?
ORDER BY run_at DESC, id DESC LIMIT ?;

-- name: due_heads_fifo
-- FIFO and LIFO past a long level walk (levels of delayed tasks): the first due
-- tasks of all levels at once, read in due-time order from prismq_ready_time,
-- so the cost follows the due tasks read, not the levels. (Ties of run_at are
-- sorted by id: the reading goes to the end of the last run_at it takes.)
SELECT run_at, id FROM prismq_tasks INDEXED BY prismq_ready_time WHERE status = 'queued' AND run_at <= ?
ORDER BY run_at, id LIMIT ?;

-- name: due_heads_lifo
SELECT run_at, id FROM prismq_tasks INDEXED BY prismq_ready_time WHERE status = 'queued' AND run_at <= ?
ORDER BY run_at DESC, id DESC LIMIT ?;

-- name: claim_ids
-- FIFO and LIFO: claim the merged candidates (a JSON array of ids) in one statement.
UPDATE prismq_tasks
SET status = 'running', attempts = attempts + 1, lease_until = :lease_until, token = :token,
    worker_id = :worker_id, started_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
RETURNING id, type, payload, priority, attempts, max_attempts, run_at, created_at, idempotency_key;

-- name: complete
UPDATE prismq_tasks
SET status = 'completed', result = ?, finished_at = ?, lease_until = NULL
WHERE id = ? AND token = ? AND status IN ('running', 'queued');

-- name: retry
UPDATE prismq_tasks
SET status = 'queued', error = ?, run_at = ?, lease_until = NULL, worker_id = NULL
WHERE id = ? AND token = ? AND status IN ('running', 'queued');

-- name: fail
UPDATE prismq_tasks
SET status = 'failed', error = ?, finished_at = ?, lease_until = NULL
WHERE id = ? AND token = ? AND status IN ('running', 'queued');

-- name: release
-- A task handed back unfinished (graceful stop): due again at once, and the
-- aborted attempt is not counted against it.
UPDATE prismq_tasks
SET status = 'queued', run_at = ?, attempts = MAX(attempts - 1, 0), lease_until = NULL, worker_id = NULL
WHERE id = ? AND token = ? AND status = 'running';

-- name: complete_many
-- complete, for many tasks in one statement: a drain's batch of acknowledgements
-- is one execution instead of one per task (each execution costs its own
-- bindings, step and reset, and lets go of the GIL and takes it back).
-- {rows} is formatted in: "(?, ?, ?, ?, ?), ..." one group per finish record,
-- bound as the record is, (kind, task_id, token, value, when): column2 is the
-- task's id, column3 its token, column4 the result, column5 finished_at
-- (column1, the kind, is unused). Each row matches at most one task (id is the
-- primary key): records for one task twice go to "complete", one at a time.
UPDATE prismq_tasks
SET status = 'completed', result = f.column4, finished_at = f.column5, lease_until = NULL
FROM (VALUES {rows}) AS f
WHERE prismq_tasks.id = f.column2 AND prismq_tasks.token = f.column3
  AND prismq_tasks.status IN ('running', 'queued');

-- name: fence_state
SELECT status, token FROM prismq_tasks WHERE id = ?;

-- name: extend_lease
UPDATE prismq_tasks SET lease_until = ?
WHERE id = ? AND token = ? AND status = 'running';

-- name: recover_exhausted
-- An expired lease whose task has used all its attempts: dead letter. The token
-- is kept, so the late holder can be told apart from a stranger.
UPDATE prismq_tasks
SET status = 'failed', finished_at = :now, lease_until = NULL,
    error = 'lease expired on attempt ' || attempts || ' of ' || max_attempts || ' (worker ' || COALESCE(worker_id, '?') || ' stopped renewing it)'
WHERE status = 'running' AND lease_until < :now AND attempts >= max_attempts;

-- name: recover_requeue
-- An expired lease: the worker died, the task did not fail, so it is due again
-- at once (no backoff). The attempt was counted when it was claimed. The token
-- is kept, so the late holder may still finish it until someone claims it again.
UPDATE prismq_tasks
SET status = 'queued', run_at = :now, lease_until = NULL, worker_id = NULL
WHERE status = 'running' AND lease_until < :now;

-- name: next_lease_expiry
-- The earliest lease end of a running task: one seek into prismq_leases. Every
-- expired lease ends before it, so none has expired while it is not before now.
SELECT MIN(lease_until) FROM prismq_tasks WHERE status = 'running';

-- name: next_moments
-- The earliest run_at of a queued task (one seek into prismq_ready_time) and
-- next_lease_expiry, in one statement: when a claim comes up short, the Worker
-- waits until the earlier of the two at most.
SELECT (SELECT MIN(run_at) FROM prismq_tasks WHERE status = 'queued'),
       (SELECT MIN(lease_until) FROM prismq_tasks WHERE status = 'running');

-- name: look
-- The change watcher's look, in one statement (one read transaction, where two
-- cost a second lock of the shared index): the file's data_version, which
-- changes when another connection commits, and whether any task is due (one
-- seek into prismq_ready_time, however many levels wait).
SELECT (SELECT data_version FROM pragma_data_version),
       EXISTS (SELECT 1 FROM prismq_tasks WHERE status = 'queued' AND run_at <= ?);

-- name: get_task
SELECT id, type, payload, priority, status, attempts, max_attempts, run_at, created_at,
       lease_until, token, worker_id, result, error, idempotency_key, finished_at
FROM prismq_tasks WHERE id = ?;

-- name: list_tasks
SELECT id, type, payload, priority, status, attempts, max_attempts, run_at, created_at,
       lease_until, token, worker_id, result, error, idempotency_key, finished_at
FROM prismq_tasks
WHERE (:status IS NULL OR status = :status) AND (:type IS NULL OR type = :type)
ORDER BY id DESC LIMIT :limit;

-- name: cancel
UPDATE prismq_tasks
SET status = 'cancelled', finished_at = ?, lease_until = NULL
WHERE id = ? AND status IN ('queued', 'running');

-- name: count_by_type_status
-- One pass over the table: counts by type and status, and how many of each
-- finished within the three recent windows (:w1, :w2, :w3 are cut-off times).
SELECT type, status, COUNT(*),
       SUM(finished_at >= :w1), SUM(finished_at >= :w2), SUM(finished_at >= :w3)
FROM prismq_tasks GROUP BY type, status;

-- name: oldest_due
-- One seek into prismq_ready_time.
SELECT MIN(run_at) FROM prismq_tasks WHERE status = 'queued' AND run_at <= ?;

-- name: raise_id_floor
-- Before purge() deletes: remember the largest id, which may be among the deleted.
UPDATE prismq_id_floor SET id = MAX(id, (SELECT COALESCE(MAX(id), 0) FROM prismq_tasks));

-- name: purge
DELETE FROM prismq_tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < ?;
