# Type stub for the compiled ingest._fastpath module.
from typing import Final

from core._deadline import DeadlineTable

from ._checkinlog import CheckinLog

INCOMPLETE: Final[int]
COMPLETE: Final[int]
DECLINE: Final[int]
NEED_MORE: Final[int]
FOR_H11: Final[int]
CLOSE: Final[int]
PING_PREFIX: Final[bytes]
TOKEN_LENGTH: Final[int]

def target_kind(target: bytes) -> tuple[str | None, int]: ...
def parse_head(
    data: bytes, max_head: int = 8192
) -> tuple[int, int, bytes | None, bytes | None, bool]: ...

class FastPath:
    table: DeadlineTable
    ok_keep_alive: bytes
    ok_close: bytes
    not_found_keep_alive: bytes
    not_found_close: bytes
    not_found_head_keep_alive: bytes
    not_found_head_close: bytes
    checked_in_keep_alive: bytes
    checked_in_close: bytes
    log: CheckinLog  # the check-ins it answered, for the ping history
    record_plain: bool
    max_head: int
    requests: int
    answered_204: int
    answered_404: int
    pings_ok: int
    pings_unknown: int
    pings_malformed: int
    def __init__(self, table: DeadlineTable, max_head: int = 8192) -> None: ...
    def ping_target(self, target: bytes, now: float) -> int: ...
    def process(self, buf: bytearray, now: float, budget: int) -> tuple[bytes, int, int, int]: ...
