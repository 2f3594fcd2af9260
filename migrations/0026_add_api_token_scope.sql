-- A token may be limited to one project and a role there. Its user's own role in the project
-- still applies: the token gets the lower of the two. A limited token is never an operator's.
ALTER TABLE api_tokens
    ADD COLUMN project_id uuid REFERENCES projects (id) ON DELETE CASCADE,
    ADD COLUMN role text CHECK (role IN ('viewer', 'member', 'admin')),
    ADD CONSTRAINT api_tokens_scope_whole CHECK ((project_id IS NULL) = (role IS NULL));
