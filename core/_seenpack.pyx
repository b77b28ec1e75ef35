# cython: language_level=3, boundscheck=True, wraparound=False
"""The seen log's sections, laid out natively (the format: ``core/seenlog.py``).

A row of the seen log holds up to every monitor of a process: 100,000 entries made by a
Python pass (grouping by shard, sorting, the gaps and the byte planes) took about 130 ms
of the interpreter every 10 s, in a thread that held the GIL against the event loop's
pings. Here the entries are C structs sorted once by (shard, id), and each section's
planes are written straight into its bytes, both without the GIL. The entries come in
as arrays (``DeadlineTable.take_seen``'s, read as typed buffers); what is left to Python
is deflate (zlib, which lets go of the GIL too) and assembling the row.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport floor
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, qsort

from array import array

ctypedef struct _Entry:
    int64_t monitor_id
    int64_t ms  # floor(time * 1000) - base_ms
    Py_ssize_t index  # in the input: equal ids keep their order
    int32_t shard


cdef int _by_shard_then_id(const void* a, const void* b) noexcept nogil:
    cdef const _Entry* x = <const _Entry*>a
    cdef const _Entry* y = <const _Entry*>b
    if x.shard != y.shard:
        return -1 if x.shard < y.shard else 1
    if x.monitor_id != y.monitor_id:
        return -1 if x.monitor_id < y.monitor_id else 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)


cdef void _fill(const _Entry* entries, Py_ssize_t n, uint8_t* p) noexcept nogil:
    """One section's values (the id gaps, then the times) as little-endian int64 split
    into byte planes at `p` (16 n bytes): byte 0 of every value, then byte 1, ..."""
    cdef Py_ssize_t width = 2 * n, k, b
    cdef uint64_t value
    cdef int64_t previous = 0
    for k in range(n):
        value = <uint64_t>(entries[k].monitor_id - previous)
        previous = entries[k].monitor_id
        for b in range(8):
            p[b * width + k] = <uint8_t>(value >> (8 * b))
        value = <uint64_t>entries[k].ms
        for b in range(8):
            p[b * width + n + k] = <uint8_t>(value >> (8 * b))


def planes(ids, times, int64_t base_ms):
    """One section of monitors `ids` last seen at `times` (epoch seconds; sequences of
    any kind), uncompressed: sorted by id."""
    out, _ = sections(array("q", ids), array("d", times), array("i", [0]) * len(ids),
                      b"\x01", b"\x00", base_ms)  # all in shard 0, held, not skipped
    return out[0][1] if out else b""


def sections(const int64_t[::1] ids, const double[::1] times, const int32_t[::1] shards,
             const uint8_t[:] held, const uint8_t[:] skip, int64_t base_ms):
    """The sections of entries (ids[i], times[i]) in shards[i] (arrays 'q', 'd', 'i', as
    ``DeadlineTable.take_seen`` makes them), uncompressed, by shard:
    ([(shard, planes, entries)], dropped). An entry of a shard not `held` (or of shard -1,
    a monitor no longer loaded) is dropped and counted; one of a shard in `skip` (written
    in full elsewhere in the row) is left out. The masks have a byte per shard, 1 for
    yes."""
    cdef Py_ssize_t n = ids.shape[0], i, kept = 0, dropped = 0, start, count = held.shape[0]
    cdef int32_t shard
    cdef _Entry* entries
    cdef bytes section
    cdef uint8_t* p
    if times.shape[0] != n or shards.shape[0] != n:
        raise ValueError("as many times and shards as ids")
    if skip.shape[0] != count:
        raise ValueError("a byte per shard in both masks")
    entries = <_Entry*>malloc(max(1, n) * sizeof(_Entry))
    if entries == NULL:
        raise MemoryError()
    out = []
    try:
        for i in range(n):
            shard = shards[i]
            if shard < 0 or shard >= count or not held[shard]:
                dropped += 1
                continue
            if skip[shard]:
                continue
            entries[kept].monitor_id = ids[i]
            entries[kept].ms = <int64_t>floor(times[i] * 1000.0) - base_ms
            entries[kept].shard = shard
            entries[kept].index = i
            kept += 1
        with nogil:
            qsort(entries, kept, sizeof(_Entry), _by_shard_then_id)
        start = 0
        for i in range(1, kept + 1):
            if i == kept or entries[i].shard != entries[start].shard:
                section = PyBytes_FromStringAndSize(NULL, 16 * (i - start))
                p = <uint8_t*>PyBytes_AS_STRING(section)
                with nogil:
                    _fill(entries + start, i - start, p)
                out.append((entries[start].shard, section, i - start))
                start = i
    finally:
        free(entries)
    return out, dropped
