# Declarations for the token table and deadline heap (bodies in _deadline.pyx).
# The ingest fast path cimports DeadlineTable to ping without a Python call.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    DIGEST_SIZE = 32
    RING = 4096           # seconds of on-time pings kept (core/_deadline_model.py's RING)
    SHARDS = 1024         # core/shards.py's SHARDS

cdef enum MonitorState:
    STATE_PENDING = 0
    STATE_UP = 1
    STATE_DOWN = 2
    STATE_PAUSED = 3
    STATE_UNKNOWN = 4     # blind (ingest/sight.py): a miss said nothing about it

cdef enum MonitorFlag:
    FLAG_LIVE = 1
    FLAG_DIRTY = 2
    FLAG_INCIDENT = 4
    FLAG_SEEN = 8
    FLAG_CHANGED = 16     # state, misses or incident changed, not only last_seen
    FLAG_FOREIGN = 32     # its shard is not this table's: answered, never judged
    FLAG_HANDOFF = 64     # pinged while foreign: queued for its owner
    FLAG_RUNTIME = 128    # has a max_runtime (DeadlineTable._max_runtimes: few monitors do)


ctypedef struct SeenOut:
    # Where _take writes the monitors it hands over as seen only, when given (take_seen:
    # straight into arrays, no Python object per monitor).
    int64_t* ids
    double* times
    int32_t* shards
    Py_ssize_t n


ctypedef struct Monitor:
    uint8_t digest[32]
    int64_t monitor_id      # next free slot while the slot is free
    double last_seen        # server receive time of the last ping, 0.0 = never
    double floor            # amnesty: the monitor is not judged on pings before this time
    double deadline         # the deadline registered in the heap, 0.0 = none
    uint32_t interval
    uint32_t grace
    uint16_t threshold
    uint16_t misses
    uint8_t state
    uint8_t flags
    uint8_t recovery        # pings in a row (none late) that resolve an open incident
    uint8_t recovering      # of those, had so far: up with its incident still open


ctypedef packed struct HeapEntry:  # 12 bytes: the heap is 1-2 entries per monitor
    double deadline
    uint32_t slot


cdef class DeadlineTable:
    cdef Monitor* _mons
    cdef uint32_t _mons_len        # slots ever used (high-water mark)
    cdef uint32_t _mons_cap
    cdef int64_t _free_head        # first free slot, -1 = none
    cdef uint32_t _count           # live monitors

    cdef int32_t* _by_digest       # open addressing, linear probing, -1 = empty
    cdef int32_t* _by_id
    cdef uint64_t _index_mask

    cdef HeapEntry* _heap
    cdef uint32_t _heap_len
    cdef uint32_t _heap_cap
    cdef uint32_t _scheduled       # live monitors with a registered deadline

    cdef uint32_t* _dirty
    cdef uint32_t _dirty_len
    cdef uint32_t _dirty_cap

    cdef list _events
    cdef list _signals             # failures and starts of foreign monitors, for their owners
    # Runs, kept aside (only monitors with a max_runtime have them; a field in every
    # record would cost every monitor 16 bytes): slot -> max_runtime, slot -> open start.
    cdef dict _max_runtimes
    cdef dict _starts
    # Schedules, kept aside too (slot -> core.schedules.Schedule): a monitor with one
    # expects its runs at its scheduled times, not every `interval` seconds.
    cdef dict _schedules

    cdef uint8_t _owned[SHARDS]    # 1 = this table judges the shard's monitors
    cdef uint32_t* _handoff        # slots pinged while foreign, for take_handoffs()
    cdef uint32_t _handoff_len
    cdef uint32_t _handoff_cap

    cdef int64_t _heard_at[RING]   # blindness: the second each ring cell counts, and
    cdef uint32_t _heard_n[RING]   # how many on-time pings had their deadline in it
    cdef bint _blind               # misses make monitors unknown, with no event

    cdef int ping_digest(self, const uint8_t* digest, double now) except -1
    cdef int ping_slot(self, int32_t slot, double now) except -1
    cdef bint signal_slot(self, int32_t slot, double at, int code) except -1
    cpdef upsert(self, int64_t monitor_id, bytes digest, uint32_t interval, uint32_t grace,
                 uint32_t threshold, bint paused, double now, str state=*, uint32_t misses=*,
                 double last_seen=*, bint incident_open=*, uint32_t recovery=*,
                 uint32_t max_runtime=*, double started=*, object schedule=*)
    cdef int32_t _find_digest(self, const uint8_t* digest)
    cdef int32_t _find_id(self, int64_t monitor_id)
    cdef uint64_t _home(self, int32_t slot, bint by_digest)
    cdef void _index_insert(self, int32_t* index, int32_t slot, bint by_digest)
    cdef void _index_delete(self, int32_t* index, int32_t slot, bint by_digest)
    cdef int _grow_indexes(self) except -1
    cdef int32_t _alloc_slot(self) except -1
    cdef void _mark_dirty(self, uint32_t slot, bint changed)
    cdef object _take(self, bint changed, bint seen, SeenOut* out=*)
    cdef bint _heap_less(self, uint32_t a, uint32_t b)
    cdef int _heap_push(self, double deadline, uint32_t slot) except -1
    cdef void _sift_down(self, uint32_t i)
    cdef HeapEntry _heap_pop(self)
    cdef bint _entry_live(self, HeapEntry* entry)
    cdef void _prune_heap(self)
    cdef int _schedule(self, uint32_t slot, double deadline) except -1
    cdef int _hear(self, Monitor* m, double now) except -1
    cdef void _unknown(self, uint32_t slot)
    cdef double _up_deadline(self, Monitor* m) except? -1.0
    cdef double _expected_after(self, Monitor* m, double at) except? -1.0
    cdef void _set_schedule(self, Monitor* m, object schedule)
    cdef uint32_t _max_runtime(self, Monitor* m)
    cdef double _started(self, Monitor* m)
    cdef void _set_max_runtime(self, Monitor* m, uint32_t seconds)
    cdef void _set_started(self, Monitor* m, double at)
    cdef double _run_due(self, Monitor* m)
    cdef double _next_due(self, Monitor* m)
    cdef int _start(self, uint32_t slot, double now) except -1
    cdef void _end_run(self, uint32_t slot, double now)
    cdef int _timeout(self, uint32_t slot, double at) except -1
    cdef void _emit(self, Monitor* m, str kind, double at, int status=*)
    cdef int _fail(self, uint32_t slot, double now, int status) except -1
    cdef int _miss(self, uint32_t slot, double at) except -1
    cdef int _insert(self, int64_t monitor_id, bytes digest, uint32_t interval, uint32_t grace,
                     uint32_t threshold, bint paused, double now, str state, uint32_t misses,
                     double last_seen, bint incident_open, uint32_t recovery,
                     uint32_t max_runtime, double started, object schedule) except -1
    cdef void _remove_slot(self, int32_t slot)
    cdef int _judge(self, uint32_t slot, bint paused, int code, uint32_t misses,
                    bint incident_open, double now, double started) except -1
    cdef int _queue_handoff(self, uint32_t slot) except -1
    cdef uint32_t _check_shard(self, shard) except? 0
    cdef int _record(self, uint32_t slot, double now) except -1
    cdef int _recovered_once(self, uint32_t slot, double now) except -1
    cdef object _due(self, Monitor* m)
