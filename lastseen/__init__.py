"""The `lastseen` command line (``cli``: serve, ingest, control, worker, migrate,
bootstrap, org, keys) and the ``serve`` supervisor of the processes and the embedded
PostgreSQL."""
