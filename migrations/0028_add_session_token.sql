-- A console session opened by signing in with an API token (the quickstart has no identity
-- provider) lasts no longer than that token, and ends when the token is revoked or deleted.
ALTER TABLE sessions ADD COLUMN token_id uuid REFERENCES api_tokens (id) ON DELETE CASCADE;
CREATE INDEX sessions_token_idx ON sessions (token_id) WHERE token_id IS NOT NULL;
