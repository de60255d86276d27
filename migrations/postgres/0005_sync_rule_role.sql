-- A tag-sync rule keeps how its jobs reach their accounts (issue 27), as a job does: JSON
-- {"role_name", "external_id", "role_session_name"}, NULL for a rule made before (the worker's
-- settings decide, as they did).
ALTER TABLE sync_rules ADD COLUMN way_in JSONB;
