"""External clients, one small module each: NATS, PostgreSQL, Redis."""
