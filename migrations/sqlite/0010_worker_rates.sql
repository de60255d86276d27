-- Each worker's recent rate on each job it works (issue 25): a job's rate is the fleet's, the
-- sum over the workers whose row and heartbeat are fresh, not whichever worker wrote last.
CREATE TABLE worker_rates (
    owner TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    rate REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, owner)
);

-- Whether an owner holds a database session whose end says it is gone (PostgreSQL only; an
-- owner registered before, or by a test, is judged by its heartbeat and pid alone).
ALTER TABLE owners ADD COLUMN session INTEGER NOT NULL DEFAULT 0;
