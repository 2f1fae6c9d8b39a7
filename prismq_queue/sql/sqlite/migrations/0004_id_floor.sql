-- Version 4 remembers the largest id ever given (see prismq_id_floor in
-- schema.sql), starting from the largest id the file holds.
CREATE TABLE prismq_id_floor (id INTEGER NOT NULL);
INSERT INTO prismq_id_floor (id) SELECT COALESCE(MAX(id), 0) FROM prismq_tasks;
