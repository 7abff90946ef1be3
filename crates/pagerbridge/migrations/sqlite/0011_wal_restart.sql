-- One row that the checkpointer rewrites right after a checkpoint that copied the whole WAL
-- into the database file. The first write after such a checkpoint starts the WAL over, and
-- starting it over costs an fsync of its new header: made here, through the writer's
-- connection, it is no longer paid by the next accept on the path of a page. What the row
-- holds does not matter (a count of restarts). See src/store/checkpointer.rs.
CREATE TABLE wal_restart (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO wal_restart (id, n) VALUES (1, 0);
