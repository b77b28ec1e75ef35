"""The control plane: two processes over one PostgreSQL.

``lastseen control`` serves the PAT API (``api``), the public status pages and the
dashboard (``web``); ``app`` composes them, ``deps`` is what every handler shares.
``lastseen worker`` (``worker``) turns the ingest's events into incidents and delivers
the durable outbox through ``delivery``, which the API's test alert uses too. Below them:
``auth``, ``access``, ``pat`` and ``crypto`` (who may do what, and the envelopes),
``models`` and ``errors`` (the wire), ``quotas``, ``subscribers``, ``keys``, ``bootstrap``.
"""
