-- A token's name is unique among its user's unrevoked tokens only, so a revoked token's name can
-- be used again (revoked rows are kept for the record). Listings read a user's tokens by user_id.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_user_id_name_key;
CREATE UNIQUE INDEX api_tokens_user_name_unrevoked_idx ON api_tokens (user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);
