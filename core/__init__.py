"""The shared core of lastseen, imported by every other package and importing none: the
token table and deadline heap (``_deadline`` and its model), tokens, the schema and its
migrations, the embedded PostgreSQL, and what every process agrees on (``problems``,
``proxies``, ``logs``, ``records``)."""

from ._deadline import DeadlineTable as DeadlineTable
