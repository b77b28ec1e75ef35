"""The ingest: answers heartbeats, keeps deadlines, flushes state to PostgreSQL."""
