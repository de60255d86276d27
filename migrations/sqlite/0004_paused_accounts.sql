-- --on-access-error pause: an account whose role is refused stops being worked for a job (its
-- items stay pending, attempts untouched) until `bulktag resume JOB`, while other accounts go on.

CREATE TABLE paused_accounts (
    job_id     INTEGER NOT NULL,
    account    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    paused_at  REAL    NOT NULL,
    PRIMARY KEY (job_id, account)
) WITHOUT ROWID;
