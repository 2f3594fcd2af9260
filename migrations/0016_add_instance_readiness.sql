-- Ready means reachable: when the guest's SSH port answered and its host keys were known, in its
-- current boot (NULL while it boots and whenever it is not running); and the SSH host public keys
-- the guest printed on its serial console, so clients check its identity without trusting it on
-- first use: [{"key_type", "public_key", "fingerprint"}].
ALTER TABLE instances ADD COLUMN ready_at timestamptz;
ALTER TABLE instances ADD COLUMN ssh_host_keys jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(ssh_host_keys) = 'array');
