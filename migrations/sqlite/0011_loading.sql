-- Jobs workable while their sources are still being read (issue 26): a big file's first items
-- are tagged while the rest is read. `loading` names the process reading (NULL once every row
-- is in), `loaded` how many rows of the sources are committed (a resubmit of the same command
-- continues after them), `loading_at` the reader's last sign of life. While `loading` is set
-- the job does not complete; once its reader is gone it is paused until a resubmit continues.
ALTER TABLE jobs ADD COLUMN loading TEXT;
ALTER TABLE jobs ADD COLUMN loaded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN loading_at REAL;
