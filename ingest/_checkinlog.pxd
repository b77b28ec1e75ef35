# Declarations of the native check-in log (bodies in _checkinlog.pyx): the fast path
# cimports CheckinLog to record a check-in without a Python object per row.

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint64_t


cdef enum:
    KIND_SUCCESS = 0
    KIND_START = 1
    KIND_FAIL = 2
    KIND_LOG = 3
    METHOD_POST = 0
    METHOD_HEAD = 1


ctypedef struct Entry:
    int64_t monitor_id
    double at
    int32_t agent        # index into agents, -1: none
    int32_t source       # before assign(): index into _forwarded, -1: none;
                         # after: index into clients, -1: none
    int16_t status       # exit status, -1: none
    uint8_t kind
    uint8_t method


cdef class CheckinLog:
    cdef Entry* _rows
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _assigned       # rows before this have their client
    cdef readonly Py_ssize_t limit  # rows held at most; more are dropped (counted)
    cdef readonly uint64_t dropped
    cdef uint64_t _counts[4]        # recorded, by kind, over the log's life
    cdef readonly list agents       # str, decoded and cut to MAX_USER_AGENT
    cdef dict _agent_index          # the raw header -> its index
    cdef bytes _last_agent
    cdef int32_t _last_agent_index
    cdef list _forwarded            # raw X-Forwarded-For values, by index
    cdef dict _forwarded_index
    cdef readonly list clients      # canonical address text (or None), by index
    cdef dict _client_index

    cdef void _fresh(self)
    cdef int32_t _client(self, object address) except -2
    cdef int add(self, int64_t monitor_id, double at, int kind, int status, int method,
                 const uint8_t* agent, Py_ssize_t agent_len,
                 const uint8_t* forwarded, Py_ssize_t forwarded_len) except -1
