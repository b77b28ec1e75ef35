# cython: language_level=3, boundscheck=True, wraparound=False
"""Load monitors into the table straight from PostgreSQL's binary COPY stream.

How this works
--------------
``COPY (SELECT <LOAD_COLUMNS>) TO STDOUT (FORMAT binary)`` streams rows while the server
produces them; ``CopyLoader.feed`` parses each chunk as it arrives and upserts every
complete row into the table, keeping a partial row for the next chunk. No Python object
per field, no record per row: loading a million monitors costs about what PostgreSQL
takes to produce them. The column order and types are fixed by LOAD_COLUMNS in
``store.py``; a row that does not match them raises ValueError (nothing is guessed).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from core._deadline cimport DeadlineTable

from core.schedules import schedule as _schedule

cdef bytes _SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
cdef int _FIELDS = 15
STATES = {
    b"pending": "pending", b"up": "up", b"down": "down", b"paused": "paused", b"unknown": "unknown"
}


cdef inline uint32_t _u32(const uint8_t* p) nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _u64(const uint8_t* p) nogil:
    return (<uint64_t>_u32(p) << 32) | _u32(p + 4)


cdef class CopyLoader:
    """Feed it the chunks of a binary COPY; it upserts each row with `now` as the floor,
    and with the later of the row's last_seen and `seen`'s (the seen log, if given)."""

    cdef DeadlineTable table
    cdef double now
    cdef bytearray _pending
    cdef bint _header_done
    cdef public bint finished
    cdef public Py_ssize_t rows
    cdef public list errors
    cdef dict seen

    def __cinit__(self, DeadlineTable table not None, double now, dict seen=None):
        self.table = table
        self.now = now
        self.seen = seen
        self._pending = bytearray()
        self.errors = []

    def feed(self, chunk not None):
        """Parse what `chunk` (bytes-like) completes; keep the rest for the next call."""
        cdef bytes data
        cdef Py_ssize_t used
        if self._pending:
            self._pending += chunk
            data = bytes(self._pending)
        else:
            data = bytes(chunk)
        used = self._parse(data)
        self._pending = bytearray(data[used:])

    def close(self):
        """The stream ended: it must have ended on the trailer, with nothing left over."""
        if not self.finished or self._pending:
            raise ValueError("the COPY stream ended in the middle of a row")

    cdef Py_ssize_t _parse(self, bytes data) except -1:
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t pos = 0, row_start, extension
        cdef int16_t fields
        cdef int32_t length
        cdef int i
        cdef Py_ssize_t starts[15]
        cdef int32_t lengths[15]
        if not self._header_done:
            if n < 19:
                return 0
            if memcmp(p, PyBytes_AS_STRING(_SIGNATURE), 11) != 0:
                raise ValueError("not a binary COPY stream")
            extension = <int32_t>_u32(p + 15)
            if n < 19 + extension:
                return 0
            pos = 19 + extension
            self._header_done = True
        while pos + 2 <= n and not self.finished:
            row_start = pos
            fields = <int16_t>((p[pos] << 8) | p[pos + 1])
            pos += 2
            if fields == -1:
                self.finished = True
                return pos
            if fields != _FIELDS:
                raise ValueError(f"expected {_FIELDS} columns, got {fields}")
            for i in range(_FIELDS):
                if pos + 4 > n:
                    return row_start
                length = <int32_t>_u32(p + pos)
                pos += 4
                if length > 0:
                    if pos + length > n:
                        return row_start
                starts[i] = pos
                lengths[i] = length
                if length > 0:
                    pos += length
            self._row(p, starts, lengths)
        return pos

    cdef int _row(self, const uint8_t* p, Py_ssize_t* s, int32_t* l) except -1:
        # id int8, token_digest bytea, interval int4, grace int4, threshold int4,
        # paused bool, state text, misses int4, last_seen float8, incident_open bool,
        # recovery_threshold int2, max_runtime int4, started float8, schedule text (null:
        # none), tz text (null with it). -2: any length, -3: any or null.
        cdef int64_t monitor_id
        cdef uint64_t bits
        cdef double last_seen, started
        cdef int i
        cdef int expected[15]
        expected[:] = [8, 32, 4, 4, 4, 1, -2, 4, 8, 1, 2, 4, 8, -3, -3]
        for i in range(_FIELDS):
            if expected[i] == -3:
                continue
            if (expected[i] == -2 and l[i] < 0) or (expected[i] != -2 and l[i] != expected[i]):
                raise ValueError(f"column {i} has length {l[i]}")
        monitor_id = <int64_t>_u64(p + s[0])
        bits = _u64(p + s[8])
        memcpy(&last_seen, &bits, 8)
        bits = _u64(p + s[12])
        memcpy(&started, &bits, 8)
        if self.seen is not None:
            logged = self.seen.get(monitor_id)
            if logged is not None and logged > last_seen:
                last_seen = logged
        state = STATES.get(PyBytes_FromStringAndSize(<const char*>(p + s[6]), l[6]))
        if state is None:
            raise ValueError("unknown state")
        try:
            schedule = None
            if l[13] >= 0:  # a cron schedule: rare, one shared object per expression
                schedule = _schedule(
                    PyBytes_FromStringAndSize(<const char*>(p + s[13]), l[13]).decode(),
                    PyBytes_FromStringAndSize(<const char*>(p + s[14]), l[14]).decode()
                    if l[14] >= 0 else "UTC",
                )
            self.table.upsert(
                monitor_id,
                PyBytes_FromStringAndSize(<const char*>(p + s[1]), 32),
                _u32(p + s[2]),
                _u32(p + s[3]),
                _u32(p + s[4]),
                p[s[5]] != 0,
                self.now,
                state,
                _u32(p + s[7]),
                last_seen,
                p[s[9]] != 0,
                (p[s[10]] << 8) | p[s[10] + 1],
                _u32(p + s[11]),
                started,
                schedule,
            )
        except ValueError as exc:
            # One bad row (a digest shared by two monitors) must not stop the load.
            self.errors.append((monitor_id, str(exc)))
        self.rows += 1
        return 0
