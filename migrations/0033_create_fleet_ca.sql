-- The fleet CA, which every control-plane replica signs with: one row, in the database every
-- replica shares, not in one replica's data directory. The first replica to start creates it
-- (or imports the one an older version kept in <data_dir>/pki).
CREATE TABLE fleet_ca (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    cert_pem   text NOT NULL,
    key_pem    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
