-- Tenancy: API keys (stored hashed) and the server secret that signs stream tickets.

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,           -- public part of the token, safe to log
    tenant      text NOT NULL,
    name        text NOT NULL DEFAULT '',
    role        text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    secret_hash text NOT NULL,              -- sha256 of the token's secret part
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

CREATE TABLE server_secrets (
    name  text PRIMARY KEY,
    value text NOT NULL
);
