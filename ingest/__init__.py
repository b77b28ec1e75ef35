"""The ingest process: answers heartbeats from memory (``listener``, ``protocol``, the
native ``_fastpath``), keeps deadlines (``scheduler`` over ``core``'s table), follows
configuration changes (``changefeed``) and flushes state and events to PostgreSQL
(``store``, through the ``database`` seam); ``service`` runs it all, ``config`` is what it
can be told. It imports nothing of the control plane."""
