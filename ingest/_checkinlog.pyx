# cython: language_level=3, boundscheck=True, wraparound=False
"""The check-ins the fast path answered, kept as C records and written with binary COPY.

How this works
--------------
A flood of ``/start`` or ``/0`` pings is a flood of ping-history rows (issue 12). Made as
Python objects (a tuple per check-in, a row per tuple, asyncpg encoding ten arrays of
them) they cost the ingest about a third more than a plain ping, before PostgreSQL
inserts them. Here each is a 32-byte ``Entry`` appended by the fast path
(``CheckinLog.add``): the User-Agent and X-Forwarded-For values are kept once per distinct
value (interned, by index; a run of the same header costs one ``memcmp``), the client's
address is filled in for the connection's rows right after the fast path answered them
(``assign``), and the writer takes the whole log (``take``) and turns it into one binary
COPY payload (``copy_data``): no Python object per row on either side.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport llround
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memset

import ipaddress

from core._deadline cimport DeadlineTable

KINDS = ("success", "start", "fail", "log")
METHODS = ("POST", "HEAD")
COLUMNS = ("monitor_id", "received_at", "kind", "exit_status", "method", "client_addr",
           "user_agent")
MAX_USER_AGENT = 500  # characters of a User-Agent kept

cdef bytes _SIGNATURE = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
cdef double _PG_EPOCH = 946684800.0  # 2000-01-01 UTC, PostgreSQL's timestamp zero
cdef list _KIND_FIELDS = [b"\x00\x00\x00\x07success", b"\x00\x00\x00\x05start",
                          b"\x00\x00\x00\x04fail", b"\x00\x00\x00\x03log"]
cdef list _METHOD_FIELDS = [b"\x00\x00\x00\x04POST", b"\x00\x00\x00\x04HEAD"]
cdef bytes _NULL = b"\xff\xff\xff\xff"


ctypedef struct _Slot:
    int64_t monitor_id
    Py_ssize_t index


cdef int _by_monitor(const void* a, const void* b) noexcept nogil:
    """Order of a COPY's rows: by monitor, then as answered."""
    cdef const _Slot* x = <const _Slot*>a
    cdef const _Slot* y = <const _Slot*>b
    if x.monitor_id != y.monitor_id:
        return -1 if x.monitor_id < y.monitor_id else 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = v >> 16
    p[2] = v >> 8
    p[3] = v


cdef inline void _put64(uint8_t* p, uint64_t v) noexcept nogil:
    _put32(p, <uint32_t>(v >> 32))
    _put32(p + 4, <uint32_t>v)


cdef bytes _text_field(str value):
    data = value.encode("utf-8")
    return (len(data)).to_bytes(4, "big") + data


cdef bytes _inet_field(object client):
    """A client's address as a binary inet field (PostgreSQL's inet_send), or NULL."""
    if client is None:
        return _NULL
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return _NULL
    packed = ip.packed
    family = 2 if ip.version == 4 else 3  # PGSQL_AF_INET, PGSQL_AF_INET6
    payload = bytes([family, 8 * len(packed), 0, len(packed)]) + packed
    return (len(payload)).to_bytes(4, "big") + payload


cdef class CheckinLog:
    """Check-ins in the order answered; see the module docstring."""

    def __cinit__(self, Py_ssize_t limit=1_000_000):
        self._rows = NULL
        self._len = self._cap = self._assigned = 0
        self.limit = limit
        self.dropped = 0
        memset(self._counts, 0, sizeof(self._counts))
        self._fresh()

    def __dealloc__(self):
        free(self._rows)

    cdef void _fresh(self):
        self.agents = []
        self._agent_index = {}
        self._last_agent = None
        self._last_agent_index = -1
        self._forwarded = []
        self._forwarded_index = {}
        self.clients = []
        self._client_index = {}

    def __len__(self):
        return self._len

    @property
    def unassigned(self):
        """Rows recorded since the last assign()."""
        return self._len - self._assigned

    @property
    def counts(self):
        """Check-ins recorded over the log's life, by kind (taken ones included)."""
        return {KINDS[i]: self._counts[i] for i in range(4)}

    cdef int add(self, int64_t monitor_id, double at, int kind, int status, int method,
                 const uint8_t* agent, Py_ssize_t agent_len,
                 const uint8_t* forwarded, Py_ssize_t forwarded_len) except -1:
        """Record a check-in; a header's length -1 means it was absent."""
        cdef Entry* e
        cdef Py_ssize_t cap
        cdef bytes raw
        self._counts[kind] += 1
        if self._len >= self.limit:
            self.dropped += 1
            return 0
        if self._len == self._cap:
            cap = max(1024, 2 * self._cap)
            e = <Entry*>realloc(self._rows, cap * sizeof(Entry))
            if e == NULL:
                raise MemoryError()
            self._rows, self._cap = e, cap
        e = &self._rows[self._len]
        e.monitor_id, e.at, e.kind, e.status, e.method = monitor_id, at, kind, status, method
        e.agent = e.source = -1
        if agent_len >= 0:
            if (self._last_agent is None or PyBytes_GET_SIZE(self._last_agent) != agent_len
                    or memcmp(PyBytes_AS_STRING(self._last_agent), agent, agent_len) != 0):
                raw = PyBytes_FromStringAndSize(<const char*>agent, agent_len)
                index = self._agent_index.get(raw)
                if index is None:
                    index = self._agent_index[raw] = len(self.agents)
                    self.agents.append(raw.decode("latin-1")[:MAX_USER_AGENT])
                self._last_agent, self._last_agent_index = raw, index
            e.agent = self._last_agent_index
        if forwarded_len >= 0:
            raw = PyBytes_FromStringAndSize(<const char*>forwarded, forwarded_len)
            index = self._forwarded_index.get(raw)
            if index is None:
                index = self._forwarded_index[raw] = len(self._forwarded)
                self._forwarded.append(raw)
            e.source = index
        self._len += 1
        return 1

    def record(self, int64_t monitor_id, double at, str kind, int status, str method,
               agent=None, forwarded=None):
        """add() from Python (for tests: the fast path calls add() itself)."""
        cdef bytes a = agent if agent is not None else b""
        cdef bytes f = forwarded if forwarded is not None else b""
        return self.add(monitor_id, at, KINDS.index(kind), status, METHODS.index(method),
                        <const uint8_t*>PyBytes_AS_STRING(a), len(a) if agent is not None else -1,
                        <const uint8_t*>PyBytes_AS_STRING(f),
                        len(f) if forwarded is not None else -1)

    cdef int32_t _client(self, object address) except -2:
        index = self._client_index.get(address)
        if index is None:
            index = self._client_index[address] = len(self.clients)
            self.clients.append(address)
        return index

    def assign(self, object peer, bint proxied, resolve):
        """The rows recorded since the last call were answered on a connection from
        `peer` (its canonical address, or None): each gets `peer`, or, when `proxied`
        (the peer is a trusted proxy) and it carried X-Forwarded-For, resolve(value),
        computed once per distinct value."""
        cdef Py_ssize_t i
        cdef int32_t peer_index = -2
        cdef dict resolved = {}
        cdef Entry* e
        for i in range(self._assigned, self._len):
            e = &self._rows[i]
            if proxied and e.source >= 0:
                index = resolved.get(e.source)
                if index is None:
                    index = resolved[e.source] = self._client(resolve(self._forwarded[e.source]))
                e.source = index
            else:
                if peer_index == -2:
                    peer_index = self._client(peer)
                e.source = peer_index
        self._assigned = self._len

    def take(self):
        """A log holding every row recorded (assigned, with their agents and clients);
        this one starts empty (its counts go on)."""
        cdef CheckinLog out = CheckinLog.__new__(CheckinLog, self.limit)
        if self._assigned < self._len:
            self.assign(None, False, None)
        out._rows, out._len, out._cap, out._assigned = self._rows, self._len, self._cap, self._len
        out.agents, out.clients = self.agents, self.clients
        self._rows = NULL
        self._len = self._cap = self._assigned = 0
        self._fresh()
        return out

    def rows(self):
        """The assigned rows as tuples: (monitor id, time, kind, exit status or -1,
        method, client or None, User-Agent or None)."""
        cdef Py_ssize_t i
        cdef Entry* e
        out = []
        for i in range(self._assigned):
            e = &self._rows[i]
            out.append((e.monitor_id, e.at, KINDS[e.kind], e.status, METHODS[e.method],
                        self.clients[e.source] if e.source >= 0 else None,
                        self.agents[e.agent] if e.agent >= 0 else None))
        return out

    def count_into(self, dict touched):
        """touched[monitor id] += its rows here."""
        cdef Py_ssize_t i
        for i in range(self._assigned):
            key = self._rows[i].monitor_id
            touched[key] = touched.get(key, 0) + 1

    def copy_data(self, DeadlineTable table=None):
        """(the rows as one binary COPY payload of COLUMNS, how many): without the rows of
        monitors `table` no longer has (deleted since they were answered), and in order of
        monitor (each monitor's as answered). PostgreSQL inserts each row into the history's
        per-monitor index: in monitor order a batch walks that index's leaves once, in
        order, instead of jumping to a random leaf per row (a third of the row's cost)."""
        cdef list clients = [_inet_field(c) for c in self.clients]
        cdef list agents = [_text_field(a) for a in self.agents]
        cdef Py_ssize_t i, j, size = PyBytes_GET_SIZE(_SIGNATURE) + 2, n = 0
        cdef Entry* e
        cdef bytearray buf
        cdef uint8_t* p
        cdef _Slot* order = <_Slot*>malloc(max(1, self._assigned) * sizeof(_Slot))
        if order == NULL:
            raise MemoryError()
        try:
            # 2 (field count) + 12 (id) + 12 (time), the kind's field, 6 (status; 4 for
            # NULL), 8 (method), the client's and the agent's fields.
            for i in range(self._assigned):
                e = &self._rows[i]
                if table is not None and table._find_id(e.monitor_id) < 0:
                    continue
                order[n].monitor_id, order[n].index = e.monitor_id, i
                n += 1
                size += (26 + PyBytes_GET_SIZE(_KIND_FIELDS[e.kind]) + (6 if e.status >= 0 else 4)
                         + 8 + (PyBytes_GET_SIZE(clients[e.source]) if e.source >= 0 else 4)
                         + (PyBytes_GET_SIZE(agents[e.agent]) if e.agent >= 0 else 4))
            qsort(order, n, sizeof(_Slot), _by_monitor)
            buf = bytearray(size)
            p = <uint8_t*><char*>buf
            memcpy(p, PyBytes_AS_STRING(_SIGNATURE), PyBytes_GET_SIZE(_SIGNATURE))
            p += PyBytes_GET_SIZE(_SIGNATURE)
            for j in range(n):
                e = &self._rows[order[j].index]
                p[0], p[1] = 0, 7
                _put32(p + 2, 8)
                _put64(p + 6, <uint64_t>e.monitor_id)
                _put32(p + 14, 8)
                _put64(p + 18, <uint64_t>llround((e.at - _PG_EPOCH) * 1e6))
                p += 26
                p = _field(p, _KIND_FIELDS[e.kind])
                if e.status >= 0:
                    _put32(p, 2)
                    p[4], p[5] = <uint8_t>(e.status >> 8), <uint8_t>e.status
                    p += 6
                else:
                    p = _field(p, _NULL)
                p = _field(p, _METHOD_FIELDS[e.method])
                p = _field(p, clients[e.source] if e.source >= 0 else _NULL)
                p = _field(p, agents[e.agent] if e.agent >= 0 else _NULL)
            p[0] = p[1] = 0xff  # the trailer: a field count of -1
        finally:
            free(order)
        return bytes(buf), n


cdef inline uint8_t* _field(uint8_t* p, bytes field):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(field)
    memcpy(p, PyBytes_AS_STRING(field), n)
    return p + n
