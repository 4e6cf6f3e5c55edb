"""State: in-memory and Redis stores, the SQLite and PostgreSQL ledgers, target statistics."""
