-- Version 2 drops the index over finished rows: it cost every acknowledgement
-- an index insert, for purge() and stats(), which scan the table anyway.
DROP INDEX IF EXISTS prismq_finished;
