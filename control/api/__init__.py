"""The REST API under /api/v1, one router per resource. Routers import the shared request
dependencies (``control.deps``) and libraries (``control.delivery`` for the test alert),
never the composition root, the worker, or each other except ``incidents`` (whose rows a
monitor shows)."""
