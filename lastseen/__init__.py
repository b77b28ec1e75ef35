"""The `lastseen` command line: serve, ingest, migrate."""
