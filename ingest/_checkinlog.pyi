# Type stub for the compiled ingest._checkinlog module.
from collections.abc import Callable
from typing import Final

from core._deadline import DeadlineTable

KINDS: Final[tuple[str, ...]]
METHODS: Final[tuple[str, ...]]
COLUMNS: Final[tuple[str, ...]]
MAX_USER_AGENT: Final[int]

class CheckinLog:
    limit: int
    dropped: int
    agents: list[str]
    clients: list[str | None]
    def __init__(self, limit: int = 1_000_000) -> None: ...
    def __len__(self) -> int: ...
    @property
    def unassigned(self) -> int: ...
    @property
    def counts(self) -> dict[str, int]: ...
    def record(
        self,
        monitor_id: int,
        at: float,
        kind: str,
        status: int,
        method: str,
        agent: bytes | None = None,
        forwarded: bytes | None = None,
    ) -> int: ...
    def assign(
        self, peer: str | None, proxied: bool, resolve: Callable[[bytes], str | None] | None
    ) -> None: ...
    def take(self) -> CheckinLog: ...
    def rows(self) -> list[tuple[int, float, str, int, str, str | None, str | None]]: ...
    def count_into(self, touched: dict[int, int]) -> None: ...
    def copy_data(self, table: DeadlineTable | None = None) -> tuple[bytes, int]: ...
