-- What a loading job's committed rows were (issue 26): one digest per chunk of the sources
-- read (comma-separated hex), so a resubmit skips a chunk already in only if it is the same
-- rows with the same tags; a file edited meanwhile is read again from the first chunk that
-- differs (the rows already in are repeats) instead of skipping rows by their count.
ALTER TABLE jobs ADD COLUMN loaded_digests TEXT;
