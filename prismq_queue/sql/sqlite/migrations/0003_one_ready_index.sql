-- Version 3 keeps one index over queued rows, (priority, run_at, id): every
-- strategy walks it level by level, so an enqueue maintains two B-trees (the
-- table and this index) instead of three.
DROP INDEX IF EXISTS prismq_ready_due;
