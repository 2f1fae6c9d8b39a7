-- SQL of the PostgreSQL backend. Each statement is named by a "-- name:" line and
-- loaded by prismq_queue/sql/__init__.py; the backend code holds no SQL text.
-- "{schema}" is replaced by the quoted schema name the queue was opened with,
-- "{channel}" by the quoted LISTEN/NOTIFY channel of that schema. A part shared
-- by several statements is a "-- fragment:", written once and included as
-- "{name arg=value ...}" (each "{arg}" in it replaced by that value).
--
-- Times are double precision seconds since the epoch, as on SQLite. Every query
-- that looks for ready work repeats "status = 'queued'" literally, so that the
-- partial indexes of postgres/schema.sql apply. The schema and its migration
-- steps live in postgres/. Batches travel as arrays (unnest), so a batch of
-- any size costs one round trip. Claims and recovery lock rows with
-- FOR UPDATE SKIP LOCKED: concurrent workers never wait for each other's rows.

-- name: schema_exists
SELECT 1 FROM pg_namespace WHERE nspname = $1;

-- name: version_table_exists
SELECT to_regclass($1) IS NOT NULL;

-- name: read_version
SELECT version FROM {schema}.prismq_version;

-- name: create_schema
CREATE SCHEMA {schema};

-- name: migration_lock
-- Processes opening the same schema at once migrate it one at a time.
SELECT pg_advisory_xact_lock(hashtext('prismq_queue migrate ' || $1));

-- name: create_version_table
CREATE TABLE IF NOT EXISTS {schema}.prismq_version (
    version integer NOT NULL,
    single  boolean PRIMARY KEY DEFAULT true CHECK (single)
);

-- name: set_version
INSERT INTO {schema}.prismq_version (version) VALUES ($1)
ON CONFLICT (single) DO UPDATE SET version = EXCLUDED.version;

-- name: insert_tasks
-- Rows come as parallel arrays, in order; ids are drawn from the sequence in
-- that order. A live task holding an idempotency key makes its row a no-op.
INSERT INTO {schema}.prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at, idempotency_key)
SELECT type, payload, priority, 'queued', run_at, max_attempts, created_at, idempotency_key
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::bigint[], $6::float8[], $7::text[])
     WITH ORDINALITY AS r (type, payload, priority, run_at, max_attempts, created_at, idempotency_key, n)
ORDER BY n
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
RETURNING id, idempotency_key;

-- name: insert_tasks_keyed
-- As insert_tasks, for rows with idempotency keys: also returns the live
-- task that holds each key (new = false), as the statement's snapshot saw it.
-- A key held by a task that another transaction committed during this
-- statement is in neither part; the backend then tries that row again.
WITH inserted AS (
    INSERT INTO {schema}.prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at,
                                       idempotency_key)
    SELECT type, payload, priority, 'queued', run_at, max_attempts, created_at, idempotency_key
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::bigint[], $6::float8[], $7::text[])
         WITH ORDINALITY AS r (type, payload, priority, run_at, max_attempts, created_at, idempotency_key, n)
    ORDER BY n
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running') DO NOTHING
    RETURNING id, idempotency_key
)
SELECT id, idempotency_key, true AS new FROM inserted
UNION ALL
SELECT id, idempotency_key, false FROM {schema}.prismq_tasks
WHERE idempotency_key = ANY($7::text[]) AND idempotency_key IS NOT NULL AND status IN ('queued', 'running');

-- fragment: recover_leases
-- Lease recovery, as two CTEs of "cycle" and "claim_cycle": {now} is the
-- statement's time, {recover} whether to recover at all, {skip} the ids the
-- statement finishes, which recovery must leave alone (no two parts of one
-- statement may change the same row).
recover_exhausted AS (
    -- An expired lease whose task has used all its attempts: dead letter. The
    -- token is kept, so the late holder can be told apart from a stranger.
    UPDATE {schema}.prismq_tasks
    SET status = 'failed', finished_at = {now}, lease_until = NULL,
        error = 'lease expired on attempt ' || attempts || ' of ' || max_attempts
                || ' (worker ' || COALESCE(worker_id, '?') || ' stopped renewing it)'
    WHERE id IN (SELECT id FROM {schema}.prismq_tasks
                 WHERE status = 'running' AND lease_until < {now} AND attempts >= max_attempts AND {recover}::boolean
                   AND (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') < {now}
                   AND id <> ALL({skip})
                 ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING id
), recover_requeue AS (
    -- An expired lease: the worker died, the task did not fail, so it is due
    -- again at once (no backoff). The attempt was counted when it was claimed.
    -- The token is kept, so the late holder may still finish it until someone
    -- claims it again.
    UPDATE {schema}.prismq_tasks
    SET status = 'queued', run_at = {now}, lease_until = NULL, worker_id = NULL
    WHERE id IN (SELECT id FROM {schema}.prismq_tasks
                 WHERE status = 'running' AND lease_until < {now} AND attempts < max_attempts AND {recover}::boolean
                   AND (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') < {now}
                   AND id <> ALL({skip})
                 ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING id
)

-- fragment: complete_finishes
-- The completions of a cycle ($1-$4: ids, tokens, result JSON, finished_at), fenced
-- by id and token: a CTE of "cycle" and of "complete_cycle".
complete AS (
    UPDATE {schema}.prismq_tasks t
    SET status = 'completed', result = f.value, finished_at = f.at, lease_until = NULL
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::float8[]) AS f (id, token, value, at)
    WHERE t.id = f.id AND t.token = f.token AND t.status IN ('running', 'queued')
    RETURNING t.id
)

-- fragment: walk_levels
-- The CTE "levels (priority, n)": the levels that hold queued tasks, lowest
-- first, each found by one index seek past the previous one (a loose index
-- scan), at most {most} of them, numbered from 1; a row with a NULL priority
-- after the last level. It runs only as far as its reader reads it.
levels (priority, n) AS (
    SELECT (SELECT min(priority) FROM {schema}.prismq_tasks WHERE status = 'queued'), 1
    UNION ALL
    SELECT (SELECT min(priority) FROM {schema}.prismq_tasks WHERE status = 'queued' AND priority > levels.priority),
           n + 1
    FROM levels WHERE levels.priority IS NOT NULL AND n < {most}
)

-- fragment: level_due
-- The due tasks of the priority level {level}, as a WHERE condition, for a
-- query ORDER BY priority, run_at, id: the level's due range of
-- prismq_ready_priority, which starts at the level's first task and ends at
-- its first delayed one. "priority = ANY(ARRAY[x])", not "priority = x": from
-- an equality the planner learns that priority is constant, drops it from the
-- ORDER BY, and may then take prismq_ready_due and filter on priority (it did,
-- once the statistics said the table held one level), reading the due tasks of
-- every other level first. Only prismq_ready_priority serves this order. (A
-- row comparison "(priority, run_at) <= (x, now)" does too, but its scan goes
-- on through the level's delayed tasks: 900 index pages for 100,000 of them.)
status = 'queued' AND priority = ANY(ARRAY[{level}]) AND run_at <= {now}

-- fragment: claim_ready
-- The claim of an ordered strategy, the CTE "claimed" of "cycle", "claim_cycle"
-- and "complete_cycle": the first {limit} due tasks in the strategy's order,
-- not those of {skip} (finished by the same statement), leased at {now} until
-- {lease} with {token} to {worker}. The backend fills "{pick ...}" with the
-- strategy's pick_<strategy> (below).
--
-- The ids are picked by a sub-select that ARRAY() runs once, before the
-- UPDATE (an InitPlan), which then looks each one up by its key. Written as
-- "id IN (SELECT ...)", the generic plan guesses that a LIMIT whose value it
-- does not know keeps 10% of the rows, and once the table has statistics it
-- joins that guess with a sequential scan of the whole table: a claim of 50
-- from a backlog of 90,000 read 90,056 rows.
claimed AS (
    UPDATE {schema}.prismq_tasks
    SET status = 'running', attempts = attempts + 1, lease_until = {lease}, token = {token}, worker_id = {worker},
        started_at = {now}
    WHERE id = ANY(ARRAY({pick now={now} limit={limit} skip={skip}}))
    RETURNING id, type, payload, priority, attempts, max_attempts, run_at, created_at, idempotency_key
)

-- name: pick_fifo
-- The ids a claim takes (see claim_ready): FIFO, first due first.
SELECT id FROM {schema}.prismq_tasks
WHERE status = 'queued' AND run_at <= {now} AND id <> ALL({skip})
ORDER BY run_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED

-- name: pick_lifo
SELECT id FROM {schema}.prismq_tasks
WHERE status = 'queued' AND run_at <= {now} AND id <> ALL({skip})
ORDER BY run_at DESC, id DESC LIMIT {limit} FOR UPDATE SKIP LOCKED

-- name: pick_priority
-- PRIORITY: walk the levels that hold queued tasks, lowest first, one index
-- seek each (a loose index scan), at most {priority_walk} of them, and take
-- each level's due tasks in turn, first due first, until {limit} are taken.
-- The walk goes only as far as the claim needs. A level only costs its seek
-- and its due tasks, however many delayed tasks it holds: one ordered scan of
-- prismq_ready_priority reads every delayed task of the levels below the
-- first due one (and the plan made while a table held one level did that).
-- Past the walk's last level (many levels of delayed tasks), the rest is one
-- ordered scan of the levels above it; its sub-select runs only if the walk
-- came up short, and is NULL (no rows) if the walk saw every level.
SELECT id FROM (
    (WITH RECURSIVE {walk_levels most={priority_walk}}
     SELECT pick.id
     FROM levels, LATERAL (SELECT id FROM {schema}.prismq_tasks
                           WHERE {level_due level=levels.priority now={now}} AND id <> ALL({skip})
                           ORDER BY priority, run_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED) AS pick
     UNION ALL
     SELECT id FROM (SELECT id FROM {schema}.prismq_tasks
                     WHERE status = 'queued' AND priority > (SELECT priority FROM levels WHERE n = {priority_walk})
                       AND run_at <= {now} AND id <> ALL({skip})
                     ORDER BY priority, run_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED) AS past)
) AS picked LIMIT {limit}

-- name: cycle
-- A worker's whole round trip in one statement, so one network trip and one
-- implicit transaction: apply the finish records of each kind (complete, retry,
-- fail, release: each an array batch, fenced by id and token as the statements
-- of the same names in sqlite.sql), recover expired leases, and claim a batch.
-- All parts see the statement's one snapshot, so none may touch a row another
-- touches: recovery and the claim skip the rows finished here, recovery takes
-- only running rows and the claim only queued ones. Tasks recovered here are
-- therefore claimed by the next statement (the backend issues one at once when
-- its claim came up short). The claim is claim_ready's, for the strategy the
-- backend fills in.
-- Recovery runs only when the earliest lease has ended (min() walks the lease
-- index in order, and an ordered scan marks the entries of finished rows dead
-- as it passes them, so that later scans skip them), at most 1000 rows per
-- kind a time.
--   $1-$4   complete: ids, tokens, result JSON, finished_at
--   $5-$8   retry:    ids, tokens, error text, new run_at
--   $9-$12  fail:     ids, tokens, error text, finished_at
--   $13-$15 release:  ids, tokens, new run_at
--   $16 now, $17 recover expired leases or not
--   $18 lease_until, $19 token, $20 worker_id, $21 how many to claim (0: none)
-- One row per claimed task, or one row of NULLs; each row also carries the
-- summary: how many finish records applied, how many leases were recovered,
-- when the next delayed task falls due and when the next lease ends.
WITH {complete_finishes}, retry AS (
    UPDATE {schema}.prismq_tasks t
    SET status = 'queued', error = f.value, run_at = f.at, lease_until = NULL, worker_id = NULL
    FROM unnest($5::bigint[], $6::bigint[], $7::text[], $8::float8[]) AS f (id, token, value, at)
    WHERE t.id = f.id AND t.token = f.token AND t.status IN ('running', 'queued')
    RETURNING t.id
), fail AS (
    UPDATE {schema}.prismq_tasks t
    SET status = 'failed', error = f.value, finished_at = f.at, lease_until = NULL
    FROM unnest($9::bigint[], $10::bigint[], $11::text[], $12::float8[]) AS f (id, token, value, at)
    WHERE t.id = f.id AND t.token = f.token AND t.status IN ('running', 'queued')
    RETURNING t.id
), release AS (
    -- A task handed back unfinished (graceful stop): due again at once, and the
    -- aborted attempt is not counted against it.
    UPDATE {schema}.prismq_tasks t
    SET status = 'queued', run_at = f.at, attempts = GREATEST(t.attempts - 1, 0), lease_until = NULL,
        worker_id = NULL
    FROM unnest($13::bigint[], $14::bigint[], $15::float8[]) AS f (id, token, at)
    WHERE t.id = f.id AND t.token = f.token AND t.status = 'running'
    RETURNING t.id
), {recover_leases now=$16 recover=$17 skip=$1::bigint[]||$5::bigint[]||$9::bigint[]||$13::bigint[]},
{claim_ready now=$16 lease=$18 token=$19 worker=$20 limit=$21 skip=$1::bigint[]||$5::bigint[]||$9::bigint[]||$13::bigint[]},
summary AS (
    SELECT (SELECT count(*) FROM complete) + (SELECT count(*) FROM retry) + (SELECT count(*) FROM fail)
               + (SELECT count(*) FROM release) AS applied,
           (SELECT count(*) FROM recover_exhausted) + (SELECT count(*) FROM recover_requeue) AS recovered,
           -- the next delayed task: one seen queued, or one this statement retried or released
           LEAST((SELECT min(run_at) FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at > $16),
                 (SELECT min(at) FROM unnest($8::float8[] || $15::float8[]) AS r (at))) AS next_due,
           (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') AS next_expiry,
           -- tasks handed back or recovered are due at once: wake the idle workers
           CASE WHEN (SELECT count(*) FROM recover_requeue) + (SELECT count(*) FROM release) > 0
                THEN pg_notify({channel}, '') END IS NULL AS quiet
)
SELECT c.*, s.applied, s.recovered, s.next_due, s.next_expiry, s.quiet
FROM summary s LEFT JOIN claimed c ON true;

-- name: claim_cycle
-- The cycle without finish records (a claim, or an idle worker woken by a
-- notification): the same recovery, claim and summary as "cycle", planned
-- without the four finish UPDATEs, which cost their set-up even when empty.
--   $1 now, $2 recover expired leases or not
--   $3 lease_until, $4 token, $5 worker_id, $6 how many to claim (0: none)
WITH {recover_leases now=$1 recover=$2 skip=ARRAY[]::bigint[]},
{claim_ready now=$1 lease=$3 token=$4 worker=$5 limit=$6 skip=ARRAY[]::bigint[]},
summary AS (
    SELECT 0::bigint AS applied,
           (SELECT count(*) FROM recover_exhausted) + (SELECT count(*) FROM recover_requeue) AS recovered,
           (SELECT min(run_at) FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at > $1) AS next_due,
           (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') AS next_expiry,
           CASE WHEN (SELECT count(*) FROM recover_requeue) > 0
                THEN pg_notify({channel}, '') END IS NULL AS quiet
)
SELECT c.*, s.applied, s.recovered, s.next_due, s.next_expiry, s.quiet
FROM summary s LEFT JOIN claimed c ON true;

-- name: complete_cycle
-- The cycle whose finish records are all completions, the common case: the same
-- completions, recovery, claim and summary as "cycle", planned without the
-- retry, fail and release UPDATEs. Each UPDATE of a statement costs the server
-- its set-up on every execution, rows or none: measured here, "cycle" costs
-- about 0.9 ms of server CPU however few rows it changes, 20 us a task more.
--   $1-$4 complete: ids, tokens, result JSON, finished_at
--   $5 now, $6 recover expired leases or not
--   $7 lease_until, $8 token, $9 worker_id, $10 how many to claim (0: none)
WITH {complete_finishes}, {recover_leases now=$5 recover=$6 skip=$1::bigint[]},
{claim_ready now=$5 lease=$7 token=$8 worker=$9 limit=$10 skip=$1::bigint[]},
summary AS (
    SELECT (SELECT count(*) FROM complete) AS applied,
           (SELECT count(*) FROM recover_exhausted) + (SELECT count(*) FROM recover_requeue) AS recovered,
           (SELECT min(run_at) FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at > $5) AS next_due,
           (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') AS next_expiry,
           -- leases recovered just now are due at once: wake the idle workers
           CASE WHEN (SELECT count(*) FROM recover_requeue) > 0
                THEN pg_notify({channel}, '') END IS NULL AS quiet
)
SELECT c.*, s.applied, s.recovered, s.next_due, s.next_expiry, s.quiet
FROM summary s LEFT JOIN claimed c ON true;

-- name: fence_state
SELECT id, status, token FROM {schema}.prismq_tasks WHERE id = ANY($1::bigint[]);

-- name: claim_levels
-- WEIGHTED_RANDOM: the backend draws how many tasks to take from each priority
-- level ($6 levels, $7 counts); each level gives its first due tasks (its
-- range: level_due). The ids are picked once, before the UPDATE, as in
-- claim_ready (which says why).
WITH claimed AS (
    UPDATE {schema}.prismq_tasks
    SET status = 'running', attempts = attempts + 1, lease_until = $1, token = $2, worker_id = $3, started_at = $4
    WHERE id = ANY(ARRAY(SELECT pick.id
                         FROM unnest($6::bigint[], $7::bigint[]) AS d (priority, n),
                              LATERAL (SELECT id FROM {schema}.prismq_tasks
                                       WHERE {level_due level=d.priority now=$4}
                                       ORDER BY priority, run_at, id LIMIT d.n FOR UPDATE SKIP LOCKED) AS pick
                         LIMIT $5))
    RETURNING id, type, payload, priority, attempts, max_attempts, run_at, created_at, idempotency_key
)
SELECT c.*, n.next_due, n.next_expiry
FROM (SELECT (SELECT min(run_at) FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at > $4) AS next_due,
             (SELECT min(lease_until) FROM {schema}.prismq_tasks WHERE status = 'running') AS next_expiry) AS n
LEFT JOIN claimed c ON true;

-- name: ready_levels
-- WEIGHTED_RANDOM, first way to find the levels to draw from: walk the levels
-- that hold queued tasks, lowest first, each found by one index seek past the
-- previous one (a loose index scan), and keep the lowest $3 that hold a due
-- task, with how many due tasks each holds (counted up to $2). The walk stops
-- after $4 levels: a row with a NULL priority says it reached the end; $3 rows
-- say it found enough. Fewer rows, none NULL: it was cut short by levels of
-- delayed tasks (see due_levels).
--   $1 now, $2 limit, $3 levels wanted, $4 levels to walk at most
WITH RECURSIVE {walk_levels most=$4}
SELECT priority,
       (SELECT count(*) FROM (SELECT 1 FROM {schema}.prismq_tasks WHERE {level_due level=levels.priority now=$1}
                              ORDER BY priority, run_at LIMIT $2) AS due)
FROM levels
WHERE priority IS NULL
   -- due: the level's earliest task, one seek (an EXISTS here is planned as a hash of every due task;
   -- min(run_at) of "priority = x" as a walk of prismq_ready_due: see level_due)
   OR (SELECT run_at FROM {schema}.prismq_tasks WHERE status = 'queued' AND priority = ANY(ARRAY[levels.priority])
       ORDER BY priority, run_at LIMIT 1) <= $1
LIMIT $3;

-- name: due_levels
-- WEIGHTED_RANDOM, second way: read the due tasks themselves in due-time order
-- (prismq_ready_due), at most $2 of them, and count them by level. When fewer
-- than $2 come back, these are all the due tasks: the levels are found at a
-- cost that follows the due work, however many levels hold delayed tasks.
SELECT priority, count(*) FROM (SELECT priority FROM {schema}.prismq_tasks
                                WHERE status = 'queued' AND run_at <= $1 ORDER BY run_at LIMIT $2) AS due
GROUP BY priority ORDER BY priority;

-- name: extend_leases
UPDATE {schema}.prismq_tasks t SET lease_until = $3
FROM unnest($1::bigint[], $2::bigint[]) AS l (id, token)
WHERE t.id = l.id AND t.token = l.token AND t.status = 'running'
RETURNING t.id;

-- name: any_ready
SELECT EXISTS (SELECT 1 FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at <= $1);

-- name: any_queued
-- The watch's holder LISTENs again after a spell of looking for work unannounced:
-- is there a task it may have missed? (delayed ones count: a look says when they fall due)
SELECT EXISTS (SELECT 1 FROM {schema}.prismq_tasks WHERE status = 'queued');

-- name: get_task
SELECT id, type, payload, priority, status, attempts, max_attempts, run_at, created_at,
       lease_until, token, worker_id, result, error, idempotency_key, finished_at
FROM {schema}.prismq_tasks WHERE id = $1;

-- name: list_tasks
SELECT id, type, payload, priority, status, attempts, max_attempts, run_at, created_at,
       lease_until, token, worker_id, result, error, idempotency_key, finished_at
FROM {schema}.prismq_tasks
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2)
ORDER BY id DESC LIMIT $3;

-- name: cancel
UPDATE {schema}.prismq_tasks
SET status = 'cancelled', finished_at = $1, lease_until = NULL
WHERE id = $2 AND status IN ('queued', 'running');

-- name: count_by_type_status
SELECT type, status, count(*) FROM {schema}.prismq_tasks GROUP BY type, status;

-- name: oldest_due
SELECT min(run_at) FROM {schema}.prismq_tasks WHERE status = 'queued' AND run_at <= $1;

-- name: finished_since
-- Counts of finished tasks over each window start in $1.
SELECT w.since, t.status, count(*)
FROM unnest($1::float8[]) AS w (since)
JOIN {schema}.prismq_tasks t ON t.status IN ('completed', 'failed', 'cancelled') AND t.finished_at >= w.since
GROUP BY w.since, t.status;

-- name: purge
DELETE FROM {schema}.prismq_tasks
WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < $1;

-- name: vacuum
VACUUM (ANALYZE) {schema}.prismq_tasks;

-- name: check_rows
-- integrity_check(): rows whose fields contradict their status.
SELECT 'task ' || id || ': ' || CASE
    WHEN status NOT IN ('queued', 'running', 'completed', 'failed', 'cancelled') THEN 'unknown status ' || status
    WHEN status = 'running' AND (lease_until IS NULL OR token IS NULL) THEN 'running without a lease'
    WHEN status = 'queued' AND lease_until IS NOT NULL THEN 'queued but leased'
    WHEN attempts < 0 THEN 'negative attempts'
    ELSE 'finished without a finish time' END
FROM {schema}.prismq_tasks
WHERE status NOT IN ('queued', 'running', 'completed', 'failed', 'cancelled')
   OR (status = 'running' AND (lease_until IS NULL OR token IS NULL))
   OR (status = 'queued' AND lease_until IS NOT NULL)
   OR attempts < 0
   OR (status IN ('completed', 'failed', 'cancelled') AND finished_at IS NULL)
ORDER BY id LIMIT 100;

-- name: check_indexes
-- integrity_check(): the table's indexes that are not valid and ready.
SELECT 'index ' || c.relname || ' is not valid'
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass($1) AND NOT (i.indisvalid AND i.indisready);

-- name: watch_wait
-- Only the process holding this session lock (the watch) LISTENs on the channel:
-- an insert is delivered to one process and wakes one worker, not every idle one
-- (each delivery wakes a server backend and a client process). An idle process
-- that does not hold it waits here, in the server's queue for the lock, not
-- LISTENing: it gets the watch when the holder lets go or its session ends.
SELECT pg_advisory_lock(hashtext('prismq_queue watch ' || {channel}));

-- name: watch_hand_over
-- The watch's workers are all busy (or gone): let go; the next waiting process
-- gets the lock at once (after UNLISTEN here, so no insert is announced twice).
SELECT pg_advisory_unlock(hashtext('prismq_queue watch ' || {channel}));
