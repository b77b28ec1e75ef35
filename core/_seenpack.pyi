# Type stub for the compiled core._seenpack module.
from array import array
from collections.abc import Sequence

def planes(ids: Sequence[int], times: Sequence[float], base_ms: int) -> bytes: ...
def sections(
    ids: array[int],
    times: array[float],
    shards: array[int],
    held: bytes,
    skip: bytes,
    base_ms: int,
) -> tuple[list[tuple[int, bytes, int]], int]: ...
