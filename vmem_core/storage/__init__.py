"""A memory folder's files: the DuckDB store, the vector vault, the audit chain, atomic writes, locks."""
