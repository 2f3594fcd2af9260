-- Every list pages by (created_at, id) within a project: an index in that order makes a page
-- cost the same at 100 instances or 100,000 (a range scan from the cursor, stopped at the limit).
CREATE INDEX instances_project_list_idx ON instances (project_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX operations_project_list_idx ON operations (project_id, created_at, id);
CREATE INDEX snapshots_project_list_idx ON snapshots (project_id, created_at, id);
CREATE INDEX ssh_keys_project_list_idx ON ssh_keys (project_id, created_at, id);
