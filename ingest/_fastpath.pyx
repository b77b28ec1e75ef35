# cython: language_level=3, boundscheck=True, wraparound=False
"""The native hot path: answer plain, well-formed pings without h11.

How this works
--------------
``parse_head`` recognises a strict subset of what h11 accepts: a ``POST`` or ``HEAD`` request
line with a visible-ASCII target and ``HTTP/1.1``, CRLF line ends only, header names of
token characters, values of visible ASCII with inner spaces or tabs, exactly one ``Host``,
no body (no ``Content-Length`` other than a single ``0``, no ``Transfer-Encoding``), no
``Expect``, no ``Upgrade``. Anything else, or anything it is not sure of, is *declined* and
handed to h11 with the bytes untouched. On what it accepts it must read exactly what h11
reads (method, target, keep-alive, where the request ends); a differential hypothesis test
checks that, whole and byte by byte.

``FastPath.process`` answers every complete accepted request in a buffer (pipelining) with
pre-rendered response bytes, stopping at the first incomplete or declined one.

Check-ins without a body or a query (``/<token>/start``, ``/fail``, ``/log``, ``/<0-255>``,
``ingest/checkins.py``), and plain pings when ``record_plain`` says the history wants them
(``LASTSEEN_PING_HISTORY_PLAIN``), are answered here too: the table hears a success or a failure at
once, and each becomes a record of ``log`` (``_checkinlog.pyx``: monitor id, time, kind,
exit status, method, User-Agent, X-Forwarded-For), which the connection completes with
its address and the ping history writes with binary COPY. With a query (``?rid=``) or a body they go to h11.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.string cimport memcmp

from core._deadline cimport DeadlineTable

from ._checkinlog cimport CheckinLog, KIND_FAIL, KIND_LOG, KIND_START, KIND_SUCCESS, METHOD_HEAD, METHOD_POST

from core._deadline import START as _START_SIGNAL

from blake3 import blake3 as _blake3

from core.tokens import TOKEN_LENGTH

cdef int _START = _START_SIGNAL  # a start signal's code (core/_deadline.pyx)

# parse_head results
INCOMPLETE = 0
COMPLETE = 1
DECLINE = -1

# process() stop reasons
NEED_MORE = 0
FOR_H11 = 1
CLOSE = 2

cdef enum:
    M_POST = 1
    M_HEAD = 2

PING_PREFIX = b"/api/v1/heartbeats/"
cdef Py_ssize_t _PREFIX_LEN = 19
# The token's format has one definition (core.tokens); the hot path reads it as a C value.
cdef Py_ssize_t _TOKEN_LEN = TOKEN_LENGTH

# Bit flags of header names the fast path must look at; 0 for any other name.
cdef enum:
    H_OTHER = 0
    H_HOST = 1
    H_CONTENT_LENGTH = 2
    H_CONNECTION = 3
    H_REFUSE = 4          # transfer-encoding, expect, upgrade: h11's business
    H_USER_AGENT = 5      # kept for the ping history of check-ins
    H_FORWARDED_FOR = 6

# Check-in kinds of a target (_target_kind)
cdef enum:
    K_OTHER = -1          # not a ping this path answers: h11's
    K_PLAIN = 0
    K_SUCCESS = 1         # /0
    K_START = 2
    K_FAIL = 3            # /fail, /1../255
    K_LOG = 4
_KIND_NAMES = ("success", "success", "start", "fail", "log")
# The check-in log's kind of each (K_PLAIN, K_SUCCESS, K_START, K_FAIL, K_LOG).
cdef int[5] _LOG_KINDS = [KIND_SUCCESS, KIND_SUCCESS, KIND_START, KIND_FAIL, KIND_LOG]


cdef struct Head:
    Py_ssize_t end            # index just past the blank line
    Py_ssize_t target_start
    Py_ssize_t target_end
    int method
    bint keep_alive
    Py_ssize_t agent_start    # the User-Agent value, -1 if none
    Py_ssize_t agent_end
    Py_ssize_t forwarded_start  # the X-Forwarded-For value, -1 if none
    Py_ssize_t forwarded_end


cdef inline bint _is_tchar(uint8_t c) nogil:
    # RFC 9110 token characters, as h11's `token` regex.
    if c >= b'a' and c <= b'z':
        return True
    if c >= b'A' and c <= b'Z':
        return True
    if c >= b'0' and c <= b'9':
        return True
    return c in b"!#$%&'*+-.^_`|~"


cdef inline bint _is_vchar(uint8_t c) nogil:
    return 0x21 <= c <= 0x7e


cdef inline uint8_t _lower(uint8_t c) nogil:
    if c >= b'A' and c <= b'Z':
        return c + 32
    return c


cdef bint _ieq(const uint8_t* p, Py_ssize_t n, const char* lit, Py_ssize_t lit_len) nogil:
    # Case-insensitive comparison with a lowercase literal.
    cdef Py_ssize_t i
    if n != lit_len:
        return False
    for i in range(n):
        if _lower(p[i]) != <uint8_t>lit[i]:
            return False
    return True


cdef int _header_kind(const uint8_t* name, Py_ssize_t n) nogil:
    if _ieq(name, n, b"host", 4):
        return H_HOST
    if _ieq(name, n, b"content-length", 14):
        return H_CONTENT_LENGTH
    if _ieq(name, n, b"connection", 10):
        return H_CONNECTION
    if (_ieq(name, n, b"transfer-encoding", 17) or _ieq(name, n, b"expect", 6)
            or _ieq(name, n, b"upgrade", 7)):
        return H_REFUSE
    if _ieq(name, n, b"user-agent", 10):
        return H_USER_AGENT
    if _ieq(name, n, b"x-forwarded-for", 15):
        return H_FORWARDED_FOR
    return H_OTHER


cdef bint _has_close_token(const uint8_t* v, Py_ssize_t n) nogil:
    # h11's get_comma_header: split on commas, strip, lowercase, look for b"close".
    cdef Py_ssize_t i = 0, start, end
    while i <= n:
        start = i
        while i < n and v[i] != b',':
            i += 1
        end = i
        while start < end and (v[start] == b' ' or v[start] == b'\t'):
            start += 1
        while end > start and (v[end - 1] == b' ' or v[end - 1] == b'\t'):
            end -= 1
        if _ieq(v + start, end - start, b"close", 5):
            return True
        i += 1
    return False


cdef inline int _prefix_state(const uint8_t* p, Py_ssize_t n, const char* lit, Py_ssize_t lit_len) nogil:
    # COMPLETE if p starts with lit, INCOMPLETE if p is a proper prefix of it, else DECLINE.
    cdef Py_ssize_t k = n if n < lit_len else lit_len
    if memcmp(p, lit, k) != 0:
        return -1
    return 1 if n >= lit_len else 0


cdef int _parse(const uint8_t* p, Py_ssize_t n, Py_ssize_t max_head, Head* h) nogil:
    cdef Py_ssize_t i, name_start, name_end, value_start, value_end
    cdef int state, kind
    cdef int hosts = 0, lengths = 0
    cdef uint8_t c
    if n == 0:
        return 0
    state = _prefix_state(p, n, b"POST ", 5)
    if state == 1:
        h.method = M_POST
    elif state == -1:
        state = _prefix_state(p, n, b"HEAD ", 5)
        if state == 1:
            h.method = M_HEAD
    if state != 1:
        return state
    i = 5
    h.target_start = i
    while i < n and _is_vchar(p[i]):
        i += 1
    if i == n:
        return 0 if n <= max_head else -1
    if p[i] != b' ' or i == h.target_start:
        return -1
    h.target_end = i
    i += 1
    state = _prefix_state(p + i, n - i, b"HTTP/1.1\r\n", 10)
    if state != 1:
        return state if n <= max_head else -1
    i += 10
    h.keep_alive = True
    h.agent_start = h.forwarded_start = -1
    while True:
        if i > max_head:
            return -1
        if i >= n:
            return 0
        if p[i] == b'\r':
            if i + 1 >= n:
                return 0
            if p[i + 1] != b'\n':
                return -1
            i += 2
            break
        name_start = i
        while i < n and _is_tchar(p[i]):
            i += 1
        if i == n:
            return 0 if n <= max_head else -1
        if p[i] != b':' or i == name_start:
            return -1
        name_end = i
        i += 1
        while i < n and (p[i] == b' ' or p[i] == b'\t'):
            i += 1
        value_start = i
        value_end = i
        while i < n:
            c = p[i]
            if _is_vchar(c):
                i += 1
                value_end = i
            elif c == b' ' or c == b'\t':
                i += 1
            elif c == b'\r':
                break
            else:
                return -1
        if i + 1 >= n:
            return 0 if n <= max_head else -1
        if p[i + 1] != b'\n':
            return -1
        i += 2
        kind = _header_kind(p + name_start, name_end - name_start)
        if kind == H_HOST:
            hosts += 1
        elif kind == H_CONTENT_LENGTH:
            lengths += 1
            if lengths > 1 or value_end - value_start != 1 or p[value_start] != b'0':
                return -1
        elif kind == H_CONNECTION:
            if _has_close_token(p + value_start, value_end - value_start):
                h.keep_alive = False
        elif kind == H_REFUSE:
            return -1
        elif kind == H_USER_AGENT:
            h.agent_start, h.agent_end = value_start, value_end
        elif kind == H_FORWARDED_FOR:
            h.forwarded_start, h.forwarded_end = value_start, value_end
    if hosts != 1 or i > max_head:
        return -1
    h.end = i
    return 1


def parse_head(bytes data not None, Py_ssize_t max_head=8192):
    """Read the request at the start of `data` as the fast path would.

    Returns (COMPLETE, end, method, target, keep_alive), (INCOMPLETE, ...) when more bytes
    could still make it acceptable, or (DECLINE, ...) when h11 must decide.
    """
    cdef Head h
    cdef int state = _parse(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                            max_head, &h)
    if state != 1:
        return (state, 0, None, None, False)
    method = b"POST" if h.method == M_POST else b"HEAD"
    return (state, h.end, method, data[h.target_start:h.target_end], bool(h.keep_alive))


cdef inline bint _is_lower_hex(uint8_t c) nogil:
    return (c >= b'0' and c <= b'9') or (c >= b'a' and c <= b'f')


cdef Py_ssize_t _token_end(const uint8_t* t, Py_ssize_t n) nogil:
    # End of the token in a target that starts with the ping prefix: at '?' or the end;
    # -1 if there is another '/', which makes it some other route.
    cdef Py_ssize_t i
    for i in range(_PREFIX_LEN, n):
        if t[i] == b'?':
            return i
        if t[i] == b'/':
            return -1
    return n


cdef bint _is_token(const uint8_t* t, Py_ssize_t n) nogil:
    # A plain ping's target holds a well-formed token (64 lowercase hex characters).
    cdef Py_ssize_t i, end = _token_end(t, n)
    if end - _PREFIX_LEN != _TOKEN_LEN:
        return False
    for i in range(_PREFIX_LEN, end):
        if not _is_lower_hex(t[i]):
            return False
    return True


cdef int _target_kind(const uint8_t* t, Py_ssize_t n, int* status) nogil:
    # What a target that starts with the ping prefix asks: K_PLAIN for /<token>[?...] (the
    # token checked later), a check-in kind for /<64 hex>/<suffix> with no query (its
    # exit status in `status`, -1 if none), K_OTHER for anything else.
    cdef Py_ssize_t end = _token_end(t, n), i, k
    cdef const uint8_t* s
    cdef int value = 0
    status[0] = -1
    if end >= 0:
        return K_PLAIN
    end = _PREFIX_LEN + _TOKEN_LEN
    if n <= end + 1 or t[end] != b'/':
        return K_OTHER
    for i in range(_PREFIX_LEN, end):
        if not _is_lower_hex(t[i]):
            return K_OTHER
    s = t + end + 1
    k = n - end - 1
    if k == 5 and memcmp(s, b"start", 5) == 0:
        return K_START
    if k == 4 and memcmp(s, b"fail", 4) == 0:
        return K_FAIL
    if k == 3 and memcmp(s, b"log", 3) == 0:
        return K_LOG
    if k > 3 or (k > 1 and s[0] == b'0'):
        return K_OTHER
    for i in range(k):
        if s[i] < b'0' or s[i] > b'9':
            return K_OTHER
        value = value * 10 + (s[i] - 48)  # 48: '0'
    if value > 255:
        return K_OTHER
    status[0] = value
    return K_SUCCESS if value == 0 else K_FAIL


def target_kind(bytes target not None):
    """How the native path reads a request target: (kind, exit status) for a ping it
    answers itself, (None, -1) for one it leaves to h11. For the differential test that
    holds it to ``ingest.checkins.parse``, the reading of the other path."""
    cdef int status = -1
    cdef int kind
    if not target.startswith(PING_PREFIX):
        return None, -1
    kind = _target_kind(<const uint8_t*>PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target),
                        &status)
    if kind == K_OTHER:
        return None, -1
    return _KIND_NAMES[kind], status


cdef class FastPath:
    """Answers pings from a buffer. Response bytes are set by the caller (see responses.py)."""

    cdef readonly DeadlineTable table
    cdef public bytes ok_keep_alive
    cdef public bytes ok_close
    cdef public bytes not_found_keep_alive
    cdef public bytes not_found_close
    cdef public bytes not_found_head_keep_alive
    cdef public bytes not_found_head_close
    cdef public bytes checked_in_keep_alive  # a check-in's 204 (with Ping-Body-Limit)
    cdef public bytes checked_in_close
    cdef public CheckinLog log   # the ping history's check-ins (see the module docstring)
    cdef public bint record_plain  # plain pings go to the history too (opt-in)
    cdef public Py_ssize_t max_head
    cdef readonly uint64_t requests
    cdef readonly uint64_t answered_204
    cdef readonly uint64_t answered_404
    cdef readonly uint64_t pings_ok
    cdef readonly uint64_t pings_unknown
    cdef readonly uint64_t pings_malformed

    def __cinit__(self, DeadlineTable table not None, Py_ssize_t max_head=8192):
        self.table = table
        self.max_head = max_head
        self.ok_keep_alive = self.ok_close = b""
        self.not_found_keep_alive = self.not_found_close = b""
        self.not_found_head_keep_alive = self.not_found_head_close = b""
        self.checked_in_keep_alive = self.checked_in_close = b""
        self.log = CheckinLog()
        self.record_plain = False

    cdef int _check_in(self, const uint8_t* p, Head* h, int kind, int status, double now) except -2:
        # A check-in of a well-formed token: 1 if known (recorded), else 0.
        cdef const uint8_t* token = p + h.target_start + _PREFIX_LEN
        cdef bytes digest = _blake3(PyBytes_FromStringAndSize(<const char*>token, _TOKEN_LEN)).digest()
        cdef const uint8_t* d = <const uint8_t*>PyBytes_AS_STRING(digest)
        cdef int32_t slot = self.table._find_digest(d)  # one lookup for all of it
        if slot < 0:
            self.pings_unknown += 1
            return 0
        if kind == K_PLAIN or kind == K_SUCCESS:
            self.table.ping_slot(slot, now)
            if kind == K_PLAIN:
                self.pings_ok += 1
        elif kind == K_FAIL:
            self.table.signal_slot(slot, now, status)
        elif kind == K_START:
            self.table.signal_slot(slot, now, _START)
        self.log.add(
            self.table._mons[slot].monitor_id, now, _LOG_KINDS[kind], status,
            METHOD_POST if h.method == M_POST else METHOD_HEAD,
            p + h.agent_start, h.agent_end - h.agent_start if h.agent_start >= 0 else -1,
            p + h.forwarded_start,
            h.forwarded_end - h.forwarded_start if h.forwarded_start >= 0 else -1,
        )
        return 1

    cdef int _ping(self, const uint8_t* target, Py_ssize_t n, double now) except -2:
        # 1 = a monitor's token, 0 = a well-formed unknown token, -1 = not a token at all.
        cdef Py_ssize_t i, end = _token_end(target, n)
        cdef const uint8_t* token = target + _PREFIX_LEN
        cdef bytes digest
        if end - _PREFIX_LEN != _TOKEN_LEN:
            self.pings_malformed += 1
            return -1
        for i in range(_TOKEN_LEN):
            if not _is_lower_hex(token[i]):
                self.pings_malformed += 1
                return -1
        digest = _blake3(PyBytes_FromStringAndSize(<const char*>token, _TOKEN_LEN)).digest()
        if self.table.ping_digest(<const uint8_t*>PyBytes_AS_STRING(digest), now):
            self.pings_ok += 1
            return 1
        self.pings_unknown += 1
        return 0

    def ping_target(self, bytes target not None, double now):
        """Route a ping whose target starts with PING_PREFIX (the slow path's entry).

        Returns 1 for a monitor's token, 0 for an unknown one, -1 for a malformed one.
        """
        return self._ping(<const uint8_t*>PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target), now)

    def process(self, bytearray buf not None, double now, Py_ssize_t budget):
        """Answer the complete pings at the start of `buf`, at most `budget` of them.

        Returns (output, consumed, answered, reason): `reason` is NEED_MORE (the rest is an
        incomplete request or nothing), FOR_H11 (the request at `consumed` is h11's) or
        CLOSE (the connection must close after `output`: the client asked, or `budget`
        ran out and the last answer says so).
        """
        cdef Py_ssize_t n = len(buf)
        cdef const uint8_t* p = <const uint8_t*><char*>buf
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t answered = 0
        cdef Head h
        cdef int state, found, kind, status
        cdef bint last
        cdef list out = []
        cdef const uint8_t* target
        cdef Py_ssize_t target_len
        reason = NEED_MORE
        while answered < budget:
            state = _parse(p + pos, n - pos, self.max_head, &h)
            if state == 0:
                break
            if state == -1:
                reason = FOR_H11
                break
            target = p + pos + h.target_start
            target_len = h.target_end - h.target_start
            if (target_len <= _PREFIX_LEN
                    or memcmp(target, PyBytes_AS_STRING(PING_PREFIX), _PREFIX_LEN) != 0):
                reason = FOR_H11
                break
            kind = _target_kind(target, target_len, &status)
            if kind == K_OTHER:
                reason = FOR_H11
                break
            if kind == K_PLAIN and not (self.record_plain and _is_token(target, target_len)):
                found = self._ping(target, target_len, now)
            else:
                found = self._check_in(p + pos, &h, kind, status, now)
            self.requests += 1
            answered += 1
            last = (not h.keep_alive) or answered == budget
            if found == 1:
                self.answered_204 += 1
                if kind == K_PLAIN:
                    out.append(self.ok_close if last else self.ok_keep_alive)
                else:
                    out.append(self.checked_in_close if last else self.checked_in_keep_alive)
                pos += h.end
                if last:
                    reason = CLOSE
                    break
                continue
            self.answered_404 += 1
            if h.method == M_HEAD:
                out.append(self.not_found_head_close if last else self.not_found_head_keep_alive)
            else:
                out.append(self.not_found_close if last else self.not_found_keep_alive)
            pos += h.end
            if last:
                reason = CLOSE
                break
        if len(out) == 1:
            output = out[0]
        else:
            output = b"".join(out)
        return output, pos, answered, reason
