-- Sign-in through an OpenID Connect provider: a sign-in under way (until the provider sends the
-- browser back), and the sessions it opens (a browser's cookie; only its SHA-256 is kept).
CREATE TABLE oidc_logins (
    state         text PRIMARY KEY,
    pkce_verifier text NOT NULL,
    nonce         text NOT NULL,
    -- Where the browser goes once signed in (a path of the console).
    next_path     text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    secret_hash bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Sent back in X-CSRF-Token on every change made with the session.
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
