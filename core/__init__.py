"""The shared core of lastseen: the token table and deadline heap, tokens, and the schema."""

from ._deadline import DeadlineTable as DeadlineTable
