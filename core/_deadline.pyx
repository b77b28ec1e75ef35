# cython: language_level=3, boundscheck=True, wraparound=False, cdivision=True
"""The token table and deadline heap of the ingest.

How this works
--------------
Monitors live in one dense array of fixed-size records (``Monitor``, 80 bytes). Two
open-addressing indexes (linear probing, backward-shift deletion, load factor <= 0.5) map
the 32-byte BLAKE3 digest of a heartbeat token, and the monitor id, to a slot. The token
itself is never stored; removing a monitor frees its slot for reuse.

Deadlines sit in a binary min-heap of (deadline, slot) with lazy deletion, shaped like
trio's ``Deadlines``: a record stores the one deadline it has registered (``deadline``),
and a heap entry is live only while it equals that. A ping only writes ``last_seen`` (O(1),
no heap work); when the registered deadline pops, the real deadline is recomputed from
``last_seen`` and the entry is pushed again if it moved. Stale entries (removed or paused
monitors, shortened intervals) are skipped on pop, and the heap is rebuilt when they
outnumber the live ones.

State rules (times are the server's receive times, in seconds):
- a new monitor is pending and has no deadline until its first ping;
- an up monitor's deadline is max(last_seen, floor) + interval + grace, where ``floor`` is
  when the process loaded it (start-up amnesty) or when it was last resumed; for a
  monitor with a schedule (``core/schedules.py``, kept aside in ``_schedules``) it is
  the first scheduled time after max(last_seen, floor), + grace;
- passing it makes the monitor down with misses = 1; every further interval (every
  further scheduled run, + grace) is one more miss; at misses == threshold ``incident_opened`` is emitted once and the monitor has no
  deadline until its next ping;
- the next ping makes it up, resets misses, emits ``recovered`` and, if an incident was
  open, ``incident_resolved``;
- paused monitors have no deadline; their pings are recorded and change nothing else;
- a failure signal (``fail``: ``/fail`` or a non-zero exit status) makes the monitor down
  with misses >= 1 and opens its incident at once, emitting ``failed`` (with the exit
  status) then ``incident_opened``, both with the last ping before it; it is a ping (it
  sets last_seen), and the next success recovers as after a miss. A failure older than
  last_seen changes nothing (a later signal decided the state already), so signals
  handed over from other processes give the same state in whatever order they arrive;
  one at the same instant as the last ping came after it, and counts;
- runs: a monitor with a max_runtime (kept aside, ``_max_runtimes``: few monitors have
  one) opens a run at a start signal (``start``; none before the last ping, none while
  paused); the run must end (a success or a failure at or after its start) by
  max(start, floor) + max_runtime, else ``timed_out`` then ``incident_opened`` (the
  monitor down, misses >= 1). Only an up or pending monitor with no incident open has a
  run deadline; without a max_runtime a start changes nothing;
- blindness (``ingest/sight.py`` decides it): while ``blind``, a miss (or a run past its
  max_runtime) makes the monitor ``unknown``, with no event and no deadline; ``blind``
  also turns the monitors whose last misses were blindness from down to unknown and
  forgets the incidents those misses opened; an unknown monitor's ping makes it up with
  no event (an incident still open goes on recovering); ``sighted(E)`` makes the unknown
  ones up (pending if never pinged) and gives every judged monitor the floor E. Every
  ping of an up monitor is counted (``heard``) at the second of the deadline it moved.

Ownership (several processes, issue 11): monitors fall into SHARDS shards by digest
(``core/shards.py``), and a table judges only the shards it owns (all of them unless told
otherwise). A monitor of another shard is *foreign*: it is kept so that its pings are
answered, each ping records last_seen and queues a hand-off (``take_handoffs``) for the
owner, and it never has a deadline, an event or a dirty mark of its own. ``release`` makes
shards foreign (their unflushed state stays for the caller to write or drop); ``take``
judges them afresh, as a restart would, with the takeover time as the amnesty floor;
``seen`` is a hand-off received by the owner, recorded like a ping at the time the other
process answered it. ``amnesty`` gives every judged monitor a new floor after the process
itself was paused. ``seen_times`` lists a shard's seen monitors for the seen log.

Every change a flush must write marks the record dirty once; ``take_dirty`` hands over the
dirty rows and ``take_events`` the events, in the order they happened.
"""

from cpython cimport array as carray
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.math cimport INFINITY, floor
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from array import array
from sys import getsizeof as _getsizeof

from core.records import DirtyRows, Event

# take_seen's arrays are cloned from these (typecodes: int64 ids, double times, int shards)
cdef carray.array _IDS = array("q")
cdef carray.array _TIMES = array("d")
cdef carray.array _SHARD_NUMBERS = array("i")

EVENT_UP = "up"
EVENT_DOWN = "down"
EVENT_INCIDENT_OPENED = "incident_opened"
EVENT_RECOVERED = "recovered"
EVENT_INCIDENT_RESOLVED = "incident_resolved"
EVENT_INCIDENT_PAUSED = "incident_paused"  # closed by a pause: not a recovery
EVENT_FAILED = "failed"  # a failure signal (/fail, a non-zero exit status)
EVENT_TIMED_OUT = "timed_out"  # a run went past maxRuntime: "running too long"
START = -2  # a hand-off signal's code for a start (else the failure's exit status or -1)

STATE_NAMES = ("pending", "up", "down", "paused", "unknown")
_STATE_CODES = {name: code for code, name in enumerate(STATE_NAMES)}

cdef uint32_t _MIN_INDEX = 64
cdef uint32_t _MAX_THRESHOLD = 65535


cdef inline uint64_t _mix64(uint64_t x) nogil:
    # splitmix64 finaliser: spreads sequential monitor ids over the index.
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef inline uint64_t _digest_hash(const uint8_t* digest) nogil:
    # A BLAKE3 digest is already uniform: its first eight bytes are the hash.
    cdef uint64_t h
    memcpy(&h, digest, 8)
    return h


cdef inline double _fmax(double a, double b) nogil:
    return a if a > b else b


cdef inline uint32_t _shard_of(const uint8_t* digest) nogil:
    # core/shards.py's shard_of: the digest's first two bytes, big-endian, modulo SHARDS.
    return ((<uint32_t>digest[0] << 8) | digest[1]) % SHARDS


def _check_status(int status):
    if status < -1 or status > 255:
        raise ValueError("an exit status is between 0 and 255 (-1: none)")


cdef class DeadlineTable:
    """Heartbeat monitors keyed by token digest, with their deadlines.

    Not thread-safe; all methods are synchronous and never block.
    """

    def __cinit__(self, uint32_t capacity=1024):
        cdef uint64_t index_size = _MIN_INDEX
        if capacity < 16:
            capacity = 16
        while index_size < <uint64_t>capacity * 2:
            index_size <<= 1
        self._mons = <Monitor*>malloc(capacity * sizeof(Monitor))
        self._mons_cap = capacity
        self._by_digest = <int32_t*>malloc(index_size * sizeof(int32_t))
        self._by_id = <int32_t*>malloc(index_size * sizeof(int32_t))
        self._heap = <HeapEntry*>malloc(capacity * sizeof(HeapEntry))
        self._heap_cap = capacity
        self._dirty = <uint32_t*>malloc(capacity * sizeof(uint32_t))
        self._dirty_cap = capacity
        self._handoff = <uint32_t*>malloc(64 * sizeof(uint32_t))
        self._handoff_cap = 64
        if not (self._mons and self._by_digest and self._by_id and self._heap and self._dirty
                and self._handoff):
            raise MemoryError()
        memset(self._owned, 1, SHARDS)  # a table judges every shard until told otherwise
        memset(self._by_digest, 0xFF, index_size * sizeof(int32_t))
        memset(self._by_id, 0xFF, index_size * sizeof(int32_t))
        self._index_mask = index_size - 1
        self._free_head = -1
        self._events = []
        self._signals = []
        self._max_runtimes = {}
        self._starts = {}
        self._schedules = {}
        cdef int i
        for i in range(RING):
            self._heard_at[i] = -1
            self._heard_n[i] = 0
        self._blind = False

    def __dealloc__(self):
        free(self._mons)
        free(self._by_digest)
        free(self._by_id)
        free(self._heap)
        free(self._dirty)
        free(self._handoff)

    def __len__(self):
        return self._count

    # ------------------------------------------------------------------ indexes

    cdef int32_t _find_digest(self, const uint8_t* digest):
        cdef uint64_t i = _digest_hash(digest) & self._index_mask
        cdef int32_t slot
        while True:
            slot = self._by_digest[i]
            if slot < 0:
                return -1
            if memcmp(self._mons[slot].digest, digest, DIGEST_SIZE) == 0:
                return slot
            i = (i + 1) & self._index_mask

    cdef int32_t _find_id(self, int64_t monitor_id):
        cdef uint64_t i = _mix64(<uint64_t>monitor_id) & self._index_mask
        cdef int32_t slot
        while True:
            slot = self._by_id[i]
            if slot < 0:
                return -1
            if self._mons[slot].monitor_id == monitor_id:
                return slot
            i = (i + 1) & self._index_mask

    cdef uint64_t _home(self, int32_t slot, bint by_digest):
        if by_digest:
            return _digest_hash(self._mons[slot].digest) & self._index_mask
        return _mix64(<uint64_t>self._mons[slot].monitor_id) & self._index_mask

    cdef void _index_insert(self, int32_t* index, int32_t slot, bint by_digest):
        cdef uint64_t i = self._home(slot, by_digest)
        while index[i] >= 0:
            i = (i + 1) & self._index_mask
        index[i] = slot

    cdef void _index_delete(self, int32_t* index, int32_t slot, bint by_digest):
        # Backward-shift deletion keeps probe chains intact without tombstones.
        cdef uint64_t mask = self._index_mask
        cdef uint64_t i = self._home(slot, by_digest)
        cdef uint64_t j, home
        cdef int32_t other
        while index[i] != slot:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            other = index[j]
            if other < 0:
                break
            home = self._home(other, by_digest)
            # Move `other` back into the hole at i unless its home lies in (i, j].
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                index[i] = other
                i = j
        index[i] = -1

    cdef int _grow_indexes(self) except -1:
        cdef uint64_t size = (self._index_mask + 1) * 2
        cdef int32_t* by_digest = <int32_t*>malloc(size * sizeof(int32_t))
        cdef int32_t* by_id = <int32_t*>malloc(size * sizeof(int32_t))
        cdef uint32_t slot
        if not by_digest or not by_id:
            free(by_digest)
            free(by_id)
            raise MemoryError()
        memset(by_digest, 0xFF, size * sizeof(int32_t))
        memset(by_id, 0xFF, size * sizeof(int32_t))
        free(self._by_digest)
        free(self._by_id)
        self._by_digest = by_digest
        self._by_id = by_id
        self._index_mask = size - 1
        for slot in range(self._mons_len):
            if self._mons[slot].flags & FLAG_LIVE:
                self._index_insert(self._by_digest, slot, True)
                self._index_insert(self._by_id, slot, False)
        return 0

    # ------------------------------------------------------------------ slots

    cdef int32_t _alloc_slot(self) except -1:
        cdef int32_t slot
        cdef Monitor* grown
        cdef uint32_t cap
        if (<uint64_t>self._count + 1) * 2 > self._index_mask + 1:
            self._grow_indexes()
        if self._free_head >= 0:
            slot = <int32_t>self._free_head
            self._free_head = self._mons[slot].monitor_id
            return slot
        if self._mons_len == self._mons_cap:
            cap = self._mons_cap * 2
            grown = <Monitor*>realloc(self._mons, cap * sizeof(Monitor))
            if not grown:
                raise MemoryError()
            self._mons = grown
            self._mons_cap = cap
        slot = self._mons_len
        self._mons_len += 1
        return slot

    cdef void _mark_dirty(self, uint32_t slot, bint changed):
        # `changed`: more than last_seen changed, so the flush must write the whole state.
        cdef uint32_t* grown
        cdef uint32_t cap
        if changed:
            self._mons[slot].flags |= FLAG_CHANGED
        if self._mons[slot].flags & FLAG_DIRTY:
            return
        if self._dirty_len == self._dirty_cap:
            cap = self._dirty_cap * 2
            grown = <uint32_t*>realloc(self._dirty, cap * sizeof(uint32_t))
            if not grown:
                # Keep the record clean rather than lose track of it: the next change
                # retries, and a failed allocation here means the process is dying anyway.
                return
            self._dirty = grown
            self._dirty_cap = cap
        self._mons[slot].flags |= FLAG_DIRTY
        self._dirty[self._dirty_len] = slot
        self._dirty_len += 1

    # ------------------------------------------------------------------ heap

    cdef bint _heap_less(self, uint32_t a, uint32_t b):
        return self._heap[a].deadline < self._heap[b].deadline

    cdef int _heap_push(self, double deadline, uint32_t slot) except -1:
        cdef HeapEntry* grown
        cdef uint32_t cap, i, parent
        cdef HeapEntry entry
        if self._heap_len == self._heap_cap:
            cap = self._heap_cap * 2
            grown = <HeapEntry*>realloc(self._heap, cap * sizeof(HeapEntry))
            if not grown:
                raise MemoryError()
            self._heap = grown
            self._heap_cap = cap
        entry.deadline = deadline
        entry.slot = slot
        i = self._heap_len
        self._heap_len += 1
        while i > 0:
            parent = (i - 1) >> 1
            if self._heap[parent].deadline <= deadline:
                break
            self._heap[i] = self._heap[parent]
            i = parent
        self._heap[i] = entry
        return 0

    cdef void _sift_down(self, uint32_t i):
        cdef uint32_t n = self._heap_len
        cdef HeapEntry entry = self._heap[i]
        cdef uint32_t child
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and self._heap_less(child + 1, child):
                child += 1
            if self._heap[child].deadline >= entry.deadline:
                break
            self._heap[i] = self._heap[child]
            i = child
        self._heap[i] = entry

    cdef HeapEntry _heap_pop(self):
        cdef HeapEntry top = self._heap[0]
        self._heap_len -= 1
        if self._heap_len > 0:
            self._heap[0] = self._heap[self._heap_len]
            self._sift_down(0)
        return top

    cdef bint _entry_live(self, HeapEntry* entry):
        cdef Monitor* m = &self._mons[entry.slot]
        return (m.flags & FLAG_LIVE) and m.deadline == entry.deadline

    cdef void _prune_heap(self):
        # Drop stale entries and re-heapify: O(n), done when they outnumber the live ones.
        cdef uint32_t i, kept = 0
        for i in range(self._heap_len):
            if self._entry_live(&self._heap[i]):
                self._heap[kept] = self._heap[i]
                kept += 1
        self._heap_len = kept
        if kept > 1:
            i = (kept - 2) >> 1
            while True:
                self._sift_down(i)
                if i == 0:
                    break
                i -= 1

    cdef int _schedule(self, uint32_t slot, double deadline) except -1:
        """Register `deadline` (0.0 = none) as the slot's one live heap entry."""
        cdef Monitor* m = &self._mons[slot]
        if m.deadline == deadline:
            return 0
        if m.deadline == 0.0:
            self._scheduled += 1
        elif deadline == 0.0:
            self._scheduled -= 1
        m.deadline = deadline
        if deadline != 0.0:
            self._heap_push(deadline, slot)
        if self._heap_len > 2 * self._scheduled + 1024:
            self._prune_heap()
        return 0

    # ------------------------------------------------------------------ state changes

    cdef double _up_deadline(self, Monitor* m) except? -1.0:
        return self._expected_after(m, _fmax(m.last_seen, m.floor)) + m.grace

    cdef double _expected_after(self, Monitor* m, double at) except? -1.0:
        # When the next run is expected after `at` (a ping, the floor).
        cdef object schedule
        if self._schedules:
            schedule = self._schedules.get(m - self._mons)
            if schedule is not None:
                return schedule.next_after(at)
        return at + m.interval

    cdef void _set_schedule(self, Monitor* m, object schedule):
        if schedule is None:
            self._schedules.pop(m - self._mons, None)
        else:
            self._schedules[m - self._mons] = schedule

    cdef uint32_t _max_runtime(self, Monitor* m):
        if not (m.flags & FLAG_RUNTIME):
            return 0
        return self._max_runtimes[m - self._mons]

    cdef double _started(self, Monitor* m):
        if not (m.flags & FLAG_RUNTIME):
            return 0.0
        return self._starts.get(m - self._mons, 0.0)

    cdef void _set_max_runtime(self, Monitor* m, uint32_t seconds):
        cdef Py_ssize_t slot = m - self._mons
        if seconds:
            m.flags |= FLAG_RUNTIME
            self._max_runtimes[slot] = seconds
        elif m.flags & FLAG_RUNTIME:
            m.flags &= ~FLAG_RUNTIME
            del self._max_runtimes[slot]
            self._starts.pop(slot, None)

    cdef void _set_started(self, Monitor* m, double at):
        # Only a monitor with a max_runtime has runs; otherwise a start is nothing here.
        cdef Py_ssize_t slot = m - self._mons
        if not (m.flags & FLAG_RUNTIME):
            return  # it has no entry: the flag went with it
        if at != 0.0:
            self._starts[slot] = at
        else:
            self._starts.pop(slot, None)

    cdef double _run_due(self, Monitor* m):
        # When the open run is too long (0.0: never): only for an up or pending monitor
        # with no incident open (a down one alerts already, or is counting its misses).
        if self._started(m) == 0.0 or self._max_runtime(m) == 0 or (m.flags & FLAG_INCIDENT):
            return 0.0
        if m.state != STATE_UP and m.state != STATE_PENDING:
            return 0.0
        return _fmax(self._started(m), m.floor) + self._max_runtime(m)

    cdef double _next_due(self, Monitor* m):
        # An up or pending monitor's deadline: the earlier of its next ping's and its run's.
        cdef double run = self._run_due(m)
        cdef double up
        if m.state != STATE_UP:
            return run
        up = self._up_deadline(m)
        return up if run == 0.0 or up < run else run

    cdef int _start(self, uint32_t slot, double now) except -1:
        # A run began at `now`: with a max_runtime, it must end by now + max_runtime.
        cdef Monitor* m = &self._mons[slot]
        cdef double due
        if (self._max_runtime(m) == 0 or m.state == STATE_PAUSED or now < m.last_seen
                or now <= self._started(m)):
            return 1  # no deadline, or an end (or a later start) came after it already
        self._set_started(m, now)
        self._mark_dirty(slot, True)
        due = self._next_due(m)
        if due != 0.0 and (m.deadline == 0.0 or due < m.deadline):
            self._schedule(slot, due)
        return 1

    cdef void _end_run(self, uint32_t slot, double now):
        # A success or a failure at `now` ends the run open since before it; a deadline
        # registered for it pops, finds a later one, and moves (lazily).
        cdef Monitor* m = &self._mons[slot]
        if self._started(m) != 0.0 and now >= self._started(m):
            self._set_started(m, 0.0)
            self._mark_dirty(slot, True)

    cdef int _timeout(self, uint32_t slot, double at) except -1:
        # The open run passed its max_runtime at `at`: down, its incident open at once.
        cdef Monitor* m = &self._mons[slot]
        if self._blind:  # its end may have gone unheard: unknown, the run forgotten
            self._set_started(m, 0.0)
            self._unknown(slot)
            return 0
        self._emit(m, EVENT_TIMED_OUT, at)
        self._set_started(m, 0.0)
        m.state = STATE_DOWN
        if m.misses == 0:
            m.misses = 1
        m.recovering = 0
        m.flags |= FLAG_INCIDENT
        self._emit(m, EVENT_INCIDENT_OPENED, at)
        self._schedule(slot, 0.0)
        self._mark_dirty(slot, True)
        return 0

    cdef void _emit(self, Monitor* m, str kind, double at, int status=-1):
        self._events.append(Event(m.monitor_id, kind, at, m.last_seen, status))

    cdef bint signal_slot(self, int32_t slot, double at, int code) except -1:
        """A failure (`code`: its exit status, -1 for none) or a start (START) at `at` of
        the monitor in `slot`: applied if this table judges it (True), else queued for
        its owner (a start only if a max_runtime makes it matter)."""
        cdef Monitor* m = &self._mons[slot]
        if m.flags & FLAG_FOREIGN:
            if code != START or self._max_runtime(m):
                self._signals.append((m.monitor_id, at, code))
            return False
        if code == START:
            self._start(slot, at)
        else:
            self._fail(slot, at, code)
        return True

    cdef int _fail(self, uint32_t slot, double now, int status) except -1:
        # A failure signal at `now` of a monitor this table judges: down, and its incident
        # opens at once (a job that says it failed needs no waiting).
        cdef Monitor* m = &self._mons[slot]
        if now < m.last_seen:
            return 1  # a later signal (success or failure) already decided its state
        if m.state == STATE_PAUSED:
            m.last_seen = now
            self._mark_dirty(slot, False)
            return 1
        # The events carry the last ping before it: the alert says when it last succeeded.
        self._emit(m, EVENT_FAILED, now, status)
        self._end_run(slot, now)
        m.state = STATE_DOWN
        if m.misses == 0:
            m.misses = 1  # a failed run counts as a missed one
        m.recovering = 0
        self._schedule(slot, 0.0)
        if not (m.flags & FLAG_INCIDENT):
            m.flags |= FLAG_INCIDENT
            self._emit(m, EVENT_INCIDENT_OPENED, now)
        m.last_seen = now
        self._mark_dirty(slot, True)
        return 1

    cdef int ping_digest(self, const uint8_t* digest, double now) except -1:
        """Record a ping; 1 if the digest belongs to a monitor, else 0."""
        cdef int32_t slot = self._find_digest(digest)
        if slot < 0:
            return 0
        return self.ping_slot(slot, now)

    cdef int ping_slot(self, int32_t slot, double now) except -1:
        """Record a ping of the monitor in `slot` (a foreign one's goes to its owner)."""
        if self._mons[slot].flags & FLAG_FOREIGN:
            self._mons[slot].last_seen = now
            self._queue_handoff(slot)
            return 1
        return self._record(slot, now)

    cdef int _queue_handoff(self, uint32_t slot) except -1:
        cdef uint32_t* grown
        cdef uint32_t cap
        if self._mons[slot].flags & FLAG_HANDOFF:
            return 0
        if self._handoff_len == self._handoff_cap:
            cap = self._handoff_cap * 2
            grown = <uint32_t*>realloc(self._handoff, cap * sizeof(uint32_t))
            if not grown:
                raise MemoryError()
            self._handoff = grown
            self._handoff_cap = cap
        self._mons[slot].flags |= FLAG_HANDOFF
        self._handoff[self._handoff_len] = slot
        self._handoff_len += 1
        return 0

    cdef int _record(self, uint32_t slot, double now) except -1:
        # A ping at `now` of a monitor this table judges.
        cdef Monitor* m = &self._mons[slot]
        cdef double due
        if m.state == STATE_UP:
            self._hear(m, now)
        m.last_seen = now
        self._mark_dirty(slot, False)
        self._end_run(slot, now)
        if m.state == STATE_PAUSED or (m.state == STATE_UP and not (m.flags & FLAG_INCIDENT)):
            return 1
        if m.state == STATE_UP:  # recovering: its incident resolves at the recovery-th ping
            self._recovered_once(slot, now)
            return 1
        m.flags |= FLAG_CHANGED
        if m.state == STATE_UNKNOWN:  # heard again after blindness: nothing to tell
            m.state = STATE_UP
            if m.flags & FLAG_INCIDENT:
                self._recovered_once(slot, now)
        elif m.state == STATE_PENDING:
            m.state = STATE_UP
            self._emit(m, EVENT_UP, now)
        else:  # STATE_DOWN
            m.state = STATE_UP
            m.misses = 0
            self._emit(m, EVENT_RECOVERED, now)
            if m.flags & FLAG_INCIDENT:
                m.recovering = 0
                self._recovered_once(slot, now)
        due = self._next_due(m)
        if m.deadline == 0.0 or due < m.deadline:  # earlier only for a handed-off ping
            self._schedule(slot, due)
        return 1

    cdef int _hear(self, Monitor* m, double now) except -1:
        # An up monitor's ping at `now`: one on-time ping for the second of the deadline
        # it moves away (kept only within half the ring of `now`).
        cdef int64_t second = <int64_t>floor(self._up_deadline(m))
        cdef int64_t at = <int64_t>floor(now)
        cdef uint32_t i
        if second - at >= RING // 2 or at - second >= RING // 2:
            return 0
        i = <uint32_t>(second & (RING - 1))
        if self._heard_at[i] != second:
            self._heard_at[i] = second
            self._heard_n[i] = 0
        self._heard_n[i] += 1
        return 0

    cdef void _unknown(self, uint32_t slot):
        cdef Monitor* m = &self._mons[slot]
        m.state = STATE_UNKNOWN
        m.misses = 0
        m.recovering = 0
        self._schedule(slot, 0.0)
        self._mark_dirty(slot, True)

    cdef int _recovered_once(self, uint32_t slot, double now) except -1:
        # One more ping in a row of an up monitor whose incident is open (flap damping).
        cdef Monitor* m = &self._mons[slot]
        if m.recovering < 255:
            m.recovering += 1
        if m.recovering >= m.recovery:
            m.flags &= ~FLAG_INCIDENT
            m.recovering = 0
            self._emit(m, EVENT_INCIDENT_RESOLVED, now)
            self._mark_dirty(slot, True)
        return 0

    cdef int _miss(self, uint32_t slot, double at) except -1:
        cdef Monitor* m = &self._mons[slot]
        if self._blind:  # nobody's pings arrive: its missing says nothing about it
            self._unknown(slot)
            return 0
        if m.state == STATE_UP:
            m.state = STATE_DOWN
            m.misses = 1
            m.recovering = 0
            self._emit(m, EVENT_DOWN, at)
        elif m.misses < _MAX_THRESHOLD:
            m.misses += 1
        self._mark_dirty(slot, True)
        if m.flags & FLAG_INCIDENT:  # down again while recovering: the same incident
            self._schedule(slot, 0.0)
        elif m.misses >= m.threshold:
            m.flags |= FLAG_INCIDENT
            self._emit(m, EVENT_INCIDENT_OPENED, at)
            self._schedule(slot, 0.0)
        elif self._schedules and (m - self._mons) in self._schedules:
            # The next scheduled run missed too, if none comes.
            self._schedule(slot, self._expected_after(m, at - m.grace) + m.grace)
        else:
            self._schedule(slot, at + m.interval)
        return 0

    # ------------------------------------------------------------------ public API

    def ping(self, bytes digest not None, double now):
        """Record a ping for the monitor whose token hashes to `digest`.

        Returns True if the digest is known. O(1): touches no heap entry unless the monitor
        had no deadline (its first ping, or the first after an incident).
        """
        if PyBytes_GET_SIZE(digest) != DIGEST_SIZE:
            raise ValueError("a digest is 32 bytes")
        return self.ping_digest(<const uint8_t*>PyBytes_AS_STRING(digest), now) == 1

    def lookup(self, bytes digest not None):
        """The id of the monitor whose token hashes to `digest`, or None."""
        cdef int32_t slot
        if PyBytes_GET_SIZE(digest) != DIGEST_SIZE:
            raise ValueError("a digest is 32 bytes")
        slot = self._find_digest(<const uint8_t*>PyBytes_AS_STRING(digest))
        return None if slot < 0 else self._mons[slot].monitor_id

    def fail(self, bytes digest not None, double now, int status=-1):
        """Record a failure signal (``/fail``: `status` -1; an exit status 1-255) for the
        monitor whose token hashes to `digest`. Returns True if the digest is known."""
        if PyBytes_GET_SIZE(digest) != DIGEST_SIZE:
            raise ValueError("a digest is 32 bytes")
        _check_status(status)
        return self._signal_digest(digest, now, status)

    def failed(self, int64_t monitor_id, double at, int status=-1):
        """A failure signal another process answered at `at`, handed to this owner: as
        seen() for a ping (relayed if foreign here, dropped if unknown: False)."""
        _check_status(status)
        return self._signal_id(monitor_id, at, status)

    def start(self, bytes digest not None, double now):
        """Record a start signal for the monitor whose token hashes to `digest`: with a
        max_runtime, the run must end (a success or a failure) by now + max_runtime.
        Returns True if the digest is known."""
        return self._signal_digest(digest, now, START)

    def started(self, int64_t monitor_id, double at):
        """A start another process answered at `at`, handed to this owner (as failed())."""
        return self._signal_id(monitor_id, at, START)

    def _signal_digest(self, bytes digest not None, double now, int code):
        # A signal answered here: True if the digest is known.
        cdef int32_t slot
        if PyBytes_GET_SIZE(digest) != DIGEST_SIZE:
            raise ValueError("a digest is 32 bytes")
        slot = self._find_digest(<const uint8_t*>PyBytes_AS_STRING(digest))
        if slot < 0:
            return False
        self.signal_slot(slot, now, code)
        return True

    def _signal_id(self, int64_t monitor_id, double at, int code):
        # A signal handed over: True if judged here, False if relayed (or unknown).
        cdef int32_t slot = self._find_id(monitor_id)
        return slot >= 0 and self.signal_slot(slot, at, code)

    def take_signals(self):
        """The failures and starts of foreign monitors since the last call, in order:
        (shards, ids, times, codes), a code being a failure's exit status (-1: none) or
        START, for their owners (none of a monitor no longer foreign)."""
        cdef list shards = [], ids = [], times = [], codes = []
        cdef int32_t slot
        for monitor_id, at, code in self._signals:
            slot = self._find_id(monitor_id)
            if slot < 0 or not (self._mons[slot].flags & FLAG_FOREIGN):
                continue
            shards.append(_shard_of(self._mons[slot].digest))  # now: a token may have moved it
            ids.append(monitor_id)
            times.append(at)
            codes.append(code)
        self._signals = []
        return shards, ids, times, codes

    cpdef upsert(
        self,
        int64_t monitor_id,
        bytes digest,
        uint32_t interval,
        uint32_t grace,
        uint32_t threshold,
        bint paused,
        double now,
        str state="pending",
        uint32_t misses=0,
        double last_seen=0.0,
        bint incident_open=False,
        uint32_t recovery=1,
        uint32_t max_runtime=0,
        double started=0.0,
        object schedule=None,
    ):
        """Add a monitor, or apply new configuration to a known one.

        For a monitor not yet in the table, `state`, `misses`, `last_seen` and
        `incident_open` restore what was persisted, and `now` becomes its amnesty floor: it
        cannot go down before now + interval + grace. For a known monitor only the
        configuration is applied; the in-memory state wins, since it has the latest pings.
        A changed digest (token rotation) stops the old one from matching at once.
        """
        cdef int32_t slot
        cdef Monitor* m
        cdef uint32_t old_threshold
        cdef bint was_paused, was_foreign, heard
        cdef int code
        cdef double due
        if digest is None or PyBytes_GET_SIZE(digest) != DIGEST_SIZE:
            raise ValueError("a digest is 32 bytes")
        if interval == 0:
            raise ValueError("interval must be positive")
        if threshold == 0 or threshold > _MAX_THRESHOLD:
            raise ValueError("threshold must be between 1 and 65535")
        if recovery == 0 or recovery > 255:
            raise ValueError("recovery must be between 1 and 255")
        slot = self._find_id(monitor_id)
        if slot < 0:
            self._insert(monitor_id, digest, interval, grace, threshold, paused, now,
                         state, misses, last_seen, incident_open, recovery, max_runtime, started,
                         schedule)
            return
        m = &self._mons[slot]
        m.flags |= FLAG_SEEN
        if memcmp(m.digest, PyBytes_AS_STRING(digest), DIGEST_SIZE) != 0:
            other = self._find_digest(<const uint8_t*>PyBytes_AS_STRING(digest))
            if other >= 0:
                raise ValueError("digest already belongs to another monitor")
            self._index_delete(self._by_digest, slot, True)
            memcpy(m.digest, PyBytes_AS_STRING(digest), DIGEST_SIZE)
            self._index_insert(self._by_digest, slot, True)
        m.interval = interval
        m.grace = grace
        old_threshold = m.threshold
        m.threshold = <uint16_t>threshold
        m.recovery = <uint8_t>recovery
        if max_runtime == 0 and self._started(m) != 0.0 and not (m.flags & FLAG_FOREIGN):
            self._mark_dirty(slot, True)  # runs have no deadline now: the open one goes
        self._set_max_runtime(m, max_runtime)  # without one, it drops the open run too
        self._set_schedule(m, schedule)
        was_paused = m.state == STATE_PAUSED
        was_foreign = (m.flags & FLAG_FOREIGN) != 0
        if not self._owned[_shard_of(m.digest)]:
            # Not judged here (a rotated token may have moved it out): configuration only.
            m.flags |= FLAG_FOREIGN
            self._schedule(slot, 0.0)
            if paused:
                m.state = STATE_PAUSED
            elif was_paused:
                m.state = STATE_PENDING if m.last_seen == 0.0 else STATE_UP
            return
        if was_foreign:
            # Moved into a shard judged here (a rotated token): loaded from the row given,
            # as at a takeover.
            code = _STATE_CODES.get(state, -1)
            if code < 0:
                raise ValueError(f"unknown state {state!r}")
            m.flags &= ~(FLAG_FOREIGN | FLAG_HANDOFF)
            heard = m.last_seen > last_seen  # a ping answered here the row does not have
            m.last_seen = _fmax(m.last_seen, last_seen)
            self._judge(slot, paused, code, misses, incident_open, now, started)
            if heard:
                self._mark_dirty(slot, False)
            return
        if paused and not was_paused:
            m.state = STATE_PAUSED
            m.misses = 0
            m.recovering = 0
            self._set_started(m, 0.0)
            if m.flags & FLAG_INCIDENT:
                m.flags &= ~FLAG_INCIDENT
                self._emit(m, EVENT_INCIDENT_PAUSED, now)
            self._schedule(slot, 0.0)
            self._mark_dirty(slot, True)
        elif was_paused and not paused:
            m.floor = now
            self._mark_dirty(slot, True)
            if m.last_seen == 0.0:
                m.state = STATE_PENDING
            else:
                m.state = STATE_UP
                self._schedule(slot, self._up_deadline(m))
        elif m.state == STATE_UP or m.state == STATE_PENDING:
            due = self._next_due(m)
            if due != 0.0 and (m.deadline == 0.0 or due < m.deadline):
                self._schedule(slot, due)
            if (m.flags & FLAG_INCIDENT) and m.recovering >= m.recovery:
                # Fewer pings in a row now resolve it, and it had them.
                m.flags &= ~FLAG_INCIDENT
                m.recovering = 0
                self._emit(m, EVENT_INCIDENT_RESOLVED, now)
                self._mark_dirty(slot, True)
        elif m.state == STATE_DOWN and not (m.flags & FLAG_INCIDENT):
            if m.misses >= m.threshold:
                m.flags |= FLAG_INCIDENT
                self._emit(m, EVENT_INCIDENT_OPENED, now)
                self._schedule(slot, 0.0)
                self._mark_dirty(slot, True)

    cdef int _insert(self, int64_t monitor_id, bytes digest, uint32_t interval, uint32_t grace,
                     uint32_t threshold, bint paused, double now, str state, uint32_t misses,
                     double last_seen, bint incident_open, uint32_t recovery,
                     uint32_t max_runtime, double started, object schedule) except -1:
        cdef int32_t slot
        cdef Monitor* m
        cdef int code = _STATE_CODES.get(state, -1)
        if code < 0:
            raise ValueError(f"unknown state {state!r}")
        if self._find_digest(<const uint8_t*>PyBytes_AS_STRING(digest)) >= 0:
            raise ValueError("digest already belongs to another monitor")
        slot = self._alloc_slot()
        m = &self._mons[slot]
        memset(m, 0, sizeof(Monitor))
        memcpy(m.digest, PyBytes_AS_STRING(digest), DIGEST_SIZE)
        m.monitor_id = monitor_id
        m.interval = interval
        m.grace = grace
        m.threshold = <uint16_t>threshold
        m.recovery = <uint8_t>recovery
        m.last_seen = last_seen
        m.floor = now
        m.flags = FLAG_LIVE | FLAG_SEEN
        self._set_max_runtime(m, max_runtime)
        self._set_schedule(m, schedule)
        self._index_insert(self._by_digest, slot, True)
        self._index_insert(self._by_id, slot, False)
        self._count += 1
        if not self._owned[_shard_of(m.digest)]:
            # Answered here, judged by its shard's owner: keep what was persisted.
            m.flags |= FLAG_FOREIGN
            m.state = STATE_PAUSED if paused else <uint8_t>code
            m.misses = <uint16_t>min(misses, _MAX_THRESHOLD)
            if incident_open:
                m.flags |= FLAG_INCIDENT
            self._set_started(m, started if max_runtime else 0.0)
            return 0
        return self._judge(slot, paused, code, misses, incident_open, now, started)

    cdef int _judge(self, uint32_t slot, bint paused, int code, uint32_t misses,
                    bint incident_open, double now, double started) except -1:
        """Judge a monitor afresh from persisted state (`code`, `misses`, `incident_open`)
        and its last_seen, with `now` as its amnesty floor: a load, a restart, a takeover."""
        cdef Monitor* m = &self._mons[slot]
        cdef double due
        m.floor = now
        m.misses = 0
        m.recovering = 0
        self._set_started(m, 0.0)
        m.flags &= ~FLAG_INCIDENT
        self._schedule(slot, 0.0)
        if paused:
            m.state = STATE_PAUSED
        elif code == STATE_PAUSED or code == STATE_PENDING or m.last_seen == 0.0:
            # Resumed while we were not looking, or never pinged: wait for a first ping.
            m.state = STATE_PENDING if m.last_seen == 0.0 else STATE_UP
            if m.state == STATE_UP:
                self._schedule(slot, self._up_deadline(m))
        elif code == STATE_UP or code == STATE_UNKNOWN:  # unknown: blind when persisted
            m.state = STATE_UP
            self._schedule(slot, self._up_deadline(m))
            if incident_open and m.recovery > 1:
                # Recovering (flap damping): the pings in a row start again from here.
                m.flags |= FLAG_INCIDENT
        else:
            # Down: keep counting misses from the amnesty floor, unless the incident is open.
            m.state = STATE_DOWN
            m.misses = <uint16_t>min(max(misses, 1), _MAX_THRESHOLD)
            if incident_open:
                m.flags |= FLAG_INCIDENT
            elif m.misses >= m.threshold:
                m.flags |= FLAG_INCIDENT
                self._emit(m, EVENT_INCIDENT_OPENED, now)
            else:
                self._schedule(slot, self._up_deadline(m))
        if incident_open and not (m.flags & FLAG_INCIDENT):
            # Paused (or found inconsistent) while we were not looking: close it, as a
            # pause closes it (no ping recovered it).
            self._emit(m, EVENT_INCIDENT_PAUSED if paused else EVENT_INCIDENT_RESOLVED, now)
        if (self._max_runtime(m) and (m.state == STATE_UP or m.state == STATE_PENDING)
                and started >= m.last_seen):
            self._set_started(m, started)  # a run still open when it was persisted (0.0: none)
            due = self._next_due(m)
            if due != 0.0 and (m.deadline == 0.0 or due < m.deadline):
                self._schedule(slot, due)
        if (m.state != code or m.misses != misses
                or bool(m.flags & FLAG_INCIDENT) != incident_open or self._started(m) != started):
            self._mark_dirty(slot, True)  # the stored row is stale: rewrite it
        return 0

    def remove(self, int64_t monitor_id):
        """Forget a monitor (deleted). Returns True if it was loaded."""
        cdef int32_t slot = self._find_id(monitor_id)
        if slot < 0:
            return False
        self._remove_slot(slot)
        return True

    cdef void _remove_slot(self, int32_t slot):
        cdef Monitor* m = &self._mons[slot]
        self._index_delete(self._by_digest, slot, True)
        self._index_delete(self._by_id, slot, False)
        if m.deadline != 0.0:
            self._scheduled -= 1
        self._set_max_runtime(m, 0)  # and its open run
        self._set_schedule(m, None)
        m.flags = 0
        m.deadline = 0.0
        m.monitor_id = self._free_head
        self._free_head = slot
        self._count -= 1

    # ------------------------------------------------------------------ ownership

    def owned(self):
        """The shards this table judges, ascending."""
        cdef uint32_t shard
        return [shard for shard in range(SHARDS) if self._owned[shard]]

    def release(self, shards):
        """Stop judging `shards` (another process owns them now): their monitors keep
        answering pings, which queue hand-offs, and lose their deadlines. What they have
        not flushed stays dirty: the caller writes it under its lease, or drops it if the
        lease is lost. Returns how many monitors became foreign."""
        cdef uint32_t slot, n = 0
        cdef Monitor* m
        for shard in shards:
            self._owned[self._check_shard(shard)] = 0
        for slot in range(self._mons_len):
            m = &self._mons[slot]
            if (m.flags & FLAG_LIVE) and not (m.flags & FLAG_FOREIGN) \
                    and not self._owned[_shard_of(m.digest)]:
                m.flags |= FLAG_FOREIGN
                self._schedule(slot, 0.0)
                n += 1
        return n

    def take(self, shards, double now):
        """Judge `shards` from now on: each of their monitors is judged afresh from what
        this table holds, with `now` as its amnesty floor (nothing goes down before now +
        interval + grace). A new owner removes the monitors it has persisted rows for
        first, upserts them after, then records with seen() the pings it heard of them.
        Returns how many monitors were taken."""
        cdef uint32_t slot, n = 0
        cdef Monitor* m
        for shard in shards:
            self._owned[self._check_shard(shard)] = 1
        for slot in range(self._mons_len):
            m = &self._mons[slot]
            if (m.flags & FLAG_LIVE) and (m.flags & FLAG_FOREIGN) \
                    and self._owned[_shard_of(m.digest)]:
                m.flags &= ~(FLAG_FOREIGN | FLAG_HANDOFF)
                self._judge(slot, m.state == STATE_PAUSED, m.state, m.misses,
                            (m.flags & FLAG_INCIDENT) != 0, now, self._started(m))
                n += 1
        return n

    cdef uint32_t _check_shard(self, shard) except? 0:
        if not 0 <= shard < SHARDS:
            raise ValueError(f"a shard is between 0 and {SHARDS - 1}")
        return shard

    def seen(self, int64_t monitor_id, double at):
        """A ping another process answered at `at`, handed to this owner: recorded like a
        ping at that time (unless a later one is known); True. If the monitor is foreign
        here (its shard moved on), the ping is queued as a hand-off again (relayed), and
        if it is unknown, dropped: False."""
        cdef int32_t slot = self._find_id(monitor_id)
        cdef Monitor* m
        if slot < 0:
            return False
        m = &self._mons[slot]
        if m.flags & FLAG_FOREIGN:
            if at > m.last_seen:
                m.last_seen = at
                self._queue_handoff(slot)
            return False
        if at > m.last_seen:
            self._record(slot, at)
        return True

    def seen_many(self, const int64_t[::1] ids not None, const double[::1] times not None,
                  double latest):
        """A hand-off's pings at once: seen(id, min(time, latest)) for each loaded monitor,
        in order; (how many were judged here, how many relayed, the indexes of the ids
        not loaded, left alone). One call for a batch: no Python object per ping."""
        cdef Py_ssize_t i, n = ids.shape[0]
        cdef int32_t slot
        cdef Monitor* m
        cdef double at
        cdef Py_ssize_t received = 0, relayed = 0
        cdef list unknown = []
        if times.shape[0] != n:
            raise ValueError("as many times as ids")
        for i in range(n):
            slot = self._find_id(ids[i])
            if slot < 0:
                unknown.append(i)
                continue
            at = times[i] if times[i] < latest else latest
            m = &self._mons[slot]
            if m.flags & FLAG_FOREIGN:
                if at > m.last_seen:
                    m.last_seen = at
                    self._queue_handoff(slot)
                relayed += 1
                continue
            if at > m.last_seen:
                self._record(slot, at)
            received += 1
        return received, relayed, unknown

    def take_handoffs(self):
        """The foreign monitors pinged since the last call, once each: (shards, ids,
        last pings), for their owners."""
        cdef list shards = [], ids = [], times = []
        cdef uint32_t i, slot
        cdef Monitor* m
        for i in range(self._handoff_len):
            slot = self._handoff[i]
            m = &self._mons[slot]
            if not (m.flags & FLAG_HANDOFF):
                continue
            m.flags &= ~FLAG_HANDOFF
            if not (m.flags & FLAG_LIVE) or not (m.flags & FLAG_FOREIGN):
                continue
            shards.append(_shard_of(m.digest))
            ids.append(m.monitor_id)
            times.append(m.last_seen)
        self._handoff_len = 0
        return shards, ids, times

    def seen_times(self, shards):
        """The judged monitors of `shards` seen at least once: (shards, ids, last pings),
        for a full section of the seen log (``core/seenlog.py``)."""
        cdef uint8_t wanted[SHARDS]
        cdef list out_shards = [], ids = [], times = []
        cdef uint32_t slot, shard
        cdef Monitor* m
        memset(wanted, 0, SHARDS)
        for s in shards:
            wanted[self._check_shard(s)] = 1
        for slot in range(self._mons_len):
            m = &self._mons[slot]
            if not (m.flags & FLAG_LIVE) or (m.flags & FLAG_FOREIGN) or m.last_seen <= 0.0:
                continue
            shard = _shard_of(m.digest)
            if wanted[shard]:
                out_shards.append(shard)
                ids.append(m.monitor_id)
                times.append(m.last_seen)
        return out_shards, ids, times

    def shards(self, ids):
        """The shard of each monitor of `ids`, in order (-1 for one not loaded)."""
        cdef list out = []
        cdef int32_t slot
        for monitor_id in ids:
            slot = self._find_id(monitor_id)
            out.append(-1 if slot < 0 else <int>_shard_of(self._mons[slot].digest))
        return out

    def shard(self, int64_t monitor_id):
        """The monitor's shard, or None if it is not loaded."""
        cdef int32_t slot = self._find_id(monitor_id)
        return None if slot < 0 else _shard_of(self._mons[slot].digest)

    def amnesty(self, double now):
        """After this process itself was paused (it cannot know which pings it missed):
        every monitor judged here gets `now` as its floor, so nothing goes down or misses
        again before now + interval + grace. Returns how many monitors it touched."""
        cdef uint32_t slot, n = 0
        cdef Monitor* m
        cdef double due
        for slot in range(self._mons_len):
            m = &self._mons[slot]
            if not (m.flags & FLAG_LIVE) or (m.flags & FLAG_FOREIGN):
                continue
            if m.floor < now:
                m.floor = now
            if m.state == STATE_DOWN and not (m.flags & FLAG_INCIDENT):
                due = self._expected_after(m, now) + m.grace
                if due > m.deadline:
                    self._schedule(slot, due)
            n += 1
        return n

    def heard(self, double until, int window):
        """The on-time pings whose deadline was in the `window` seconds up to `until`
        (whole seconds: those after floor(until) - window, up to floor(until))."""
        cdef int64_t end = <int64_t>floor(until)
        cdef int64_t second
        cdef uint64_t total = 0
        cdef uint32_t i
        if window < 1 or window > RING // 2:
            raise ValueError(f"a window is 1 to {RING // 2} seconds")
        for second in range(end - window + 1, end + 1):
            i = <uint32_t>(second & (RING - 1))
            if self._heard_at[i] == second:
                total += self._heard_n[i]
        return total

    def blind(self, down, opened):
        """Blind from now on: a miss makes a monitor unknown, with no event. The misses
        just before it were blindness too: the `down` monitors (their events are
        dropped) become unknown, and the incidents of `opened` were never opened (they
        are unknown too if down). Returns how many became unknown."""
        cdef int32_t slot
        cdef Monitor* m
        cdef uint32_t n = 0
        self._blind = True
        opened = list(opened)
        for monitor_id in opened:
            slot = self._find_id(monitor_id)
            if slot < 0:
                continue
            m = &self._mons[slot]
            if not (m.flags & FLAG_FOREIGN) and (m.flags & FLAG_INCIDENT):
                m.flags &= ~FLAG_INCIDENT
                m.recovering = 0
                self._mark_dirty(slot, True)
        for monitor_id in [*down, *opened]:
            slot = self._find_id(monitor_id)
            if slot < 0:
                continue
            m = &self._mons[slot]
            if not (m.flags & FLAG_FOREIGN) and m.state == STATE_DOWN:
                self._unknown(slot)
                n += 1
        return n

    def sighted(self, double at):
        """Pings arrive again since `at`: unknown monitors are up (pending if never
        pinged), and every judged monitor is judged afresh from `at` (amnesty). Returns
        how many were unknown."""
        cdef uint32_t slot, n = 0
        cdef Monitor* m
        self._blind = False
        for slot in range(self._mons_len):
            m = &self._mons[slot]
            if not (m.flags & FLAG_LIVE) or (m.flags & FLAG_FOREIGN):
                continue
            if m.state == STATE_UNKNOWN:
                m.state = STATE_UP if m.last_seen != 0.0 else STATE_PENDING
                if m.floor < at:
                    m.floor = at
                self._schedule(slot, self._next_due(m))
                self._mark_dirty(slot, True)
                n += 1
        self.amnesty(at)
        return n

    def is_blind(self):
        return bool(self._blind)

    def unknown_count(self):
        cdef uint32_t slot, n = 0
        for slot in range(self._mons_len):
            if ((self._mons[slot].flags & FLAG_LIVE) and not (self._mons[slot].flags & FLAG_FOREIGN)
                    and self._mons[slot].state == STATE_UNKNOWN):
                n += 1
        return n

    def begin_sync(self):
        """Start a full resync: every monitor not upserted before end_sync() is removed."""
        cdef uint32_t slot
        for slot in range(self._mons_len):
            self._mons[slot].flags &= ~FLAG_SEEN

    def end_sync(self):
        """Remove the monitors not upserted since begin_sync(); returns their ids, sorted."""
        cdef uint32_t slot
        cdef list removed = []
        for slot in range(self._mons_len):
            if (self._mons[slot].flags & FLAG_LIVE) and not (self._mons[slot].flags & FLAG_SEEN):
                removed.append(self._mons[slot].monitor_id)
                self._remove_slot(slot)
        removed.sort()
        return removed

    def pop_due(self, double now):
        """Process every deadline at or before `now`; returns how many monitors missed.

        The events this produces are read with take_events().
        """
        cdef HeapEntry entry
        cdef Monitor* m
        cdef double due
        cdef uint32_t missed = 0
        while self._heap_len > 0 and self._heap[0].deadline <= now:
            entry = self._heap_pop()
            if not self._entry_live(&entry):
                continue
            m = &self._mons[entry.slot]
            # The entry is live: forget it before re-registering anything.
            m.deadline = 0.0
            self._scheduled -= 1
            if m.state == STATE_UP or m.state == STATE_PENDING:
                due = self._next_due(m)
                if due == 0.0:
                    continue  # a run ended: nothing to wait for (pending)
                if due > now:
                    self._schedule(entry.slot, due)
                    continue
                if due == self._run_due(m):
                    self._timeout(entry.slot, due)
                else:
                    self._miss(entry.slot, due)
            elif m.state == STATE_DOWN:
                self._miss(entry.slot, entry.deadline)
            else:
                continue
            missed += 1
        return missed

    def next_deadline(self):
        """When to call pop_due() next: at or before the earliest deadline; inf if none.

        Registered deadlines are lazy, so this may be earlier than any real deadline.
        """
        cdef HeapEntry entry
        while self._heap_len > 0:
            if self._entry_live(&self._heap[0]):
                return self._heap[0].deadline
            entry = self._heap_pop()
        return INFINITY

    def take_events(self):
        """The events since the last call, as (monitor_id, kind, at) in order."""
        events = self._events
        self._events = []
        return events

    def take_dirty(self, bint keep_seen=False):
        """Hand over every monitor changed since the last call, and mark it clean.

        Returns a ``core.records.DirtyRows``. `keep_seen`: a monitor whose only change is
        a later last_seen stays marked, and out of the rows (its seen lists are empty):
        it is owed to the seen log, which takes such monitors with ``take_seen`` every
        few seconds. Handing each one over every flush instead made two Python objects
        per pinged monitor per second, which the seen log then merged into a dict: at
        32,000 pings a second, 8-35 ms of a flush's step without a checkpoint.
        """
        return self._take(True, not keep_seen)

    def take_seen(self):
        """Hand over the monitors whose only change since they were last handed over is
        a later last_seen (what ``take_dirty(keep_seen=True)`` kept), and mark them
        clean: (ids, last_seen times, their shards) as arrays ('q', 'd', 'i'), written in
        the one pass over the marked monitors. Monitors changed otherwise stay for
        take_dirty."""
        cdef carray.array ids = carray.clone(_IDS, self._dirty_len, False)
        cdef carray.array times = carray.clone(_TIMES, self._dirty_len, False)
        cdef carray.array shards = carray.clone(_SHARD_NUMBERS, self._dirty_len, False)
        cdef SeenOut out
        out.ids = <int64_t*>ids.data.as_longlongs
        out.times = times.data.as_doubles
        out.shards = <int32_t*>shards.data.as_ints
        out.n = 0
        self._take(False, True, &out)
        carray.resize(ids, out.n)
        carray.resize(times, out.n)
        carray.resize(shards, out.n)
        return ids, times, shards

    cdef object _take(self, bint changed, bint seen, SeenOut* out=NULL):
        # One pass over the dirty list: hand over the monitors `changed` otherwise (whole
        # rows) and those `seen` only (a later last_seen: into `out` if given, else into
        # the rows' lists); the others stay marked, and in the list (compacted in place:
        # `kept` never passes the entry being read).
        cdef list seen_ids = [], seen_times = []
        cdef list ids = [], times = [], states = [], misses = [], incidents = [], started = []
        cdef uint32_t i, slot, kept = 0
        cdef Monitor* m
        for i in range(self._dirty_len):
            slot = self._dirty[i]
            m = &self._mons[slot]
            if not (m.flags & FLAG_DIRTY):
                continue
            if not (m.flags & FLAG_LIVE):
                m.flags &= ~(FLAG_DIRTY | FLAG_CHANGED)
                continue
            if not (changed if m.flags & FLAG_CHANGED else seen):
                self._dirty[kept] = slot
                kept += 1
                continue
            if m.flags & FLAG_CHANGED:
                ids.append(m.monitor_id)
                times.append(m.last_seen)
                states.append(STATE_NAMES[m.state])
                misses.append(m.misses)
                incidents.append(bool(m.flags & FLAG_INCIDENT))
                started.append(self._started(m))
            else:
                if out != NULL:
                    out.ids[out.n] = m.monitor_id
                    out.times[out.n] = m.last_seen
                    out.shards[out.n] = <int32_t>_shard_of(m.digest)
                    out.n += 1
                else:
                    seen_ids.append(m.monitor_id)
                    seen_times.append(m.last_seen)
            m.flags &= ~(FLAG_DIRTY | FLAG_CHANGED)
        self._dirty_len = kept
        return DirtyRows(seen_ids, seen_times, ids, times, states, misses, incidents, started)

    def mark_dirty(self, ids, bint changed=True):
        """Mark monitors dirty again (e.g. after a failed flush), whole state included
        unless `changed` is false (a later last_seen only: a seen log row that was not
        written); unknown ids are skipped."""
        cdef int32_t slot
        for monitor_id in ids:
            slot = self._find_id(monitor_id)
            if slot >= 0:
                self._mark_dirty(slot, changed)

    @property
    def dirty_count(self):
        return self._dirty_len

    def get(self, int64_t monitor_id):
        """The monitor's state as a dict, or None if it is not loaded."""
        cdef int32_t slot = self._find_id(monitor_id)
        cdef Monitor* m
        if slot < 0:
            return None
        m = &self._mons[slot]
        return {
            "id": m.monitor_id,
            "state": STATE_NAMES[m.state],
            "misses": m.misses,
            "last_seen": m.last_seen,
            "incident_open": bool(m.flags & FLAG_INCIDENT),
            "deadline": self._due(m),
            "foreign": bool(m.flags & FLAG_FOREIGN),
            "interval": m.interval,
            "grace": m.grace,
            "threshold": m.threshold,
            "recovery": m.recovery,
            "recovering": m.recovering,
            "max_runtime": self._max_runtime(m),
            "started": self._started(m),
            "schedule": self._schedules.get(m - self._mons),
        }

    cdef object _due(self, Monitor* m):
        # The real deadline; the registered one may be earlier (lazy after pings).
        if m.flags & FLAG_FOREIGN:
            return None
        if m.state == STATE_UP:
            return self._next_due(m)
        if m.state == STATE_PENDING:
            return self._run_due(m) or None
        if m.state == STATE_DOWN and not (m.flags & FLAG_INCIDENT):
            return m.deadline
        return None

    def ids(self):
        """The ids of all loaded monitors."""
        cdef uint32_t slot
        return [self._mons[slot].monitor_id for slot in range(self._mons_len)
                if self._mons[slot].flags & FLAG_LIVE]

    def memory_bytes(self):
        """Bytes allocated by the table: records, both indexes, heap and dirty list, and
        (estimated: the dicts and their int and float objects) the runs kept aside."""
        return (
            self._mons_cap * sizeof(Monitor)
            + 2 * (self._index_mask + 1) * sizeof(int32_t)
            + self._heap_cap * sizeof(HeapEntry)
            + self._dirty_cap * sizeof(uint32_t)
            + _getsizeof(self._max_runtimes) + _getsizeof(self._starts)
            + 56 * len(self._max_runtimes) + 56 * len(self._starts)
        )

    def statistics(self):
        """Counts for metrics: monitors, scheduled, heap entries, dirty. (Pings are
        counted by the fast path, which answers them.)"""
        return {
            "monitors": self._count,
            "scheduled": self._scheduled,
            "heap_entries": self._heap_len,
            "dirty": self._dirty_len,
        }
