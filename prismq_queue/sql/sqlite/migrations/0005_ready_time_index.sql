-- Version 5 indexes queued rows by due time again, with their level: a
-- WEIGHTED_RANDOM claim finds the levels that hold due work by reading the due
-- rows when there are few of them, instead of walking every level (100,000
-- levels of delayed tasks cost a walk of ~0.5-2.5 s under the write lock), and
-- the next due time is one seek. The cost: an enqueue maintains three B-trees.
CREATE INDEX prismq_ready_time ON prismq_tasks (run_at, priority) WHERE status = 'queued';
