-- SSH public keys, injected into instances through the NoCloud config drive.
CREATE TABLE ssh_keys (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    name        text NOT NULL,
    public_key  text NOT NULL CHECK (public_key !~ '[\r\n]'),
    fingerprint text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);
