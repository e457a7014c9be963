"""The PostgreSQL backend: the embedded store's tables in one PostgreSQL database."""
