# Type stub for the compiled ingest._copyload module.
from core._deadline import DeadlineTable

class CopyLoader:
    finished: bool
    rows: int
    errors: list[tuple[int, str]]
    def __init__(
        self, table: DeadlineTable, now: float, seen: dict[int, float] | None = None
    ) -> None: ...
    def feed(self, chunk: bytes | bytearray | memoryview) -> None: ...
    def close(self) -> None: ...
