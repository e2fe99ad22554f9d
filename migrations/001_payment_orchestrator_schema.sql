-- The spec's schema, made valid PostgreSQL (15+):
--  * the spec's inline INDEX clauses are MySQL syntax: here they are CREATE INDEX statements;
--  * payment_id UNIQUE already gives an index, so idx_payment_id is not created again;
--  * timestamps are TIMESTAMPTZ: an instant, whatever the session time zone;
--  * our additions: `version` (the sink keeps the newest and never goes back), checks on
--    amount and currency, and a unique key on history (payment_id, version) so that a
--    redelivered state change inserts nothing (the sink is idempotent).

CREATE TABLE payment_states (
    id BIGSERIAL PRIMARY KEY,
    payment_id VARCHAR(255) NOT NULL UNIQUE,
    current_state VARCHAR(50) NOT NULL,
    previous_state VARCHAR(50),
    amount DECIMAL(19,4) NOT NULL CHECK (amount > 0),
    currency VARCHAR(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    customer_id VARCHAR(255) NOT NULL,
    merchant_id VARCHAR(255) NOT NULL,
    metadata JSONB,
    version INTEGER NOT NULL CHECK (version > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_current_state ON payment_states (current_state);
CREATE INDEX idx_customer_id ON payment_states (customer_id);
CREATE INDEX idx_updated_at ON payment_states (updated_at DESC);

CREATE TABLE payment_state_history (
    id BIGSERIAL PRIMARY KEY,
    payment_id VARCHAR(255) NOT NULL,
    state VARCHAR(50) NOT NULL,
    previous_state VARCHAR(50),
    version INTEGER NOT NULL CHECK (version > 0),
    event_id VARCHAR(300) NOT NULL,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT uq_history_payment_version UNIQUE (payment_id, version)
);

CREATE INDEX idx_payment_id_history ON payment_state_history (payment_id, created_at DESC);
