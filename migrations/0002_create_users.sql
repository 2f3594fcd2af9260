-- Users and their roles. A user is either local (bootstrap admin, service accounts) or comes from
-- an OIDC provider, identified by (issuer, subject) as the OIDC spec requires.
CREATE TABLE users (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    email        text,
    oidc_issuer  text,
    oidc_subject text,
    -- Operators manage the fleet (hosts, join tokens); they are not implicitly project members.
    is_operator  boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    UNIQUE (oidc_issuer, oidc_subject),
    CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL))
);

CREATE TABLE project_members (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user_idx ON project_members (user_id);
