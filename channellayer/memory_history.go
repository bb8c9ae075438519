package channellayer

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemoryConfig configures a Memory layer. The zero value works.
type MemoryConfig struct {
	// History lists which groups keep a history and how much. Nil means
	// DefaultHistory; an empty, non-nil list keeps none.
	History []HistoryPolicy
	// HistoryMaxBytes bounds the memory every group's history holds
	// together: the messages kept (their encoded bytes plus about
	// entryOverhead bytes each) and the groups that keep them (about
	// ringOverhead bytes plus the name each). A send that would pass it
	// drops the oldest messages of all groups first, whatever their
	// group; a client resuming from before them is told to resync, as
	// for any message trimmed away. Zero means DefaultHistoryMaxBytes;
	// negative, no bound but the policies'.
	HistoryMaxBytes int64
	// MaxGroups caps the distinct groups the layer holds at once (those
	// with a member): a GroupAdd that would create one more fails with an
	// error wrapping groups.ErrGroupLimit. Sends are not limited. 0: no
	// cap.
	MaxGroups int
}

// DefaultHistoryMaxBytes is the bound of a Memory layer's histories when
// MemoryConfig.HistoryMaxBytes is zero: 64 MiB.
const DefaultHistoryMaxBytes = 64 << 20

// entryOverhead is what one kept message costs besides its bytes: the
// entry, its id and type, and its place in the eviction queue. ringOverhead
// is what one group with a history costs besides its name.
const (
	entryOverhead = 160
	ringOverhead  = 200
)

// minSweep bounds from below how often a Memory layer sweeps expired
// history, and maxSweep from above.
const (
	minSweep = 100 * time.Millisecond
	maxSweep = time.Minute
)

// NewMemoryWith returns an empty in-memory layer configured by cfg.
func NewMemoryWith(cfg MemoryConfig) (*Memory, error) {
	policies, err := checkPolicies(cfg.History)
	if err != nil {
		return nil, err
	}
	l := NewMemory()
	l.setPolicies(policies)
	switch {
	case cfg.HistoryMaxBytes > 0:
		l.maxBytes = cfg.HistoryMaxBytes
	case cfg.HistoryMaxBytes < 0:
		l.maxBytes = 0
	}
	l.reg.SetMaxGroups(cfg.MaxGroups)
	return l, nil
}

// setPolicies sets the layer's policies and, from the shortest age among
// them, how often expired entries are swept: a tenth of it, between
// minSweep and maxSweep. Policies without an age need no sweep.
func (l *Memory) setPolicies(policies []HistoryPolicy) {
	l.policies = policies
	l.sweepEvery = 0
	for _, p := range policies {
		if p.Size > 0 && p.Age > 0 {
			every := min(max(p.Age/10, minSweep), maxSweep)
			if l.sweepEvery == 0 || every < l.sweepEvery {
				l.sweepEvery = every
			}
		}
	}
}

// ring is one group's history in a Memory layer. Its entries and last
// are guarded by the layer's histMu; mu only orders the group's sends, so
// that members get ids in order, and is held through their delivery,
// which histMu is not.
type ring struct {
	mu      sync.Mutex
	group   string
	policy  HistoryPolicy
	users   int // sends holding the ring, under histMu: it is not removed while > 0
	last    ID
	entries []entry // oldest first
}

type entry struct {
	id, prev ID
	at       time.Time
	msg      Message // the frame members received, id included
}

// ref names one kept entry in the layer's queue, which holds every entry
// in the order they were kept, oldest first, for dropping the oldest of
// all groups when the histories hold too much. A ref whose entry is gone
// (trimmed by size or age, or its ring removed) is stale and skipped.
type ref struct {
	r  *ring
	id ID
}

func (e *entry) cost() int64 {
	return int64(len(e.msg.data) + len(e.msg.typ) + len(e.msg.id) + entryOverhead)
}

func ringCost(group string) int64 { return int64(len(group) + ringOverhead) }

// HistoryStats counts what a Memory layer's histories hold.
type HistoryStats struct {
	Groups   int   // groups holding a history now
	Entries  int   // messages kept
	Bytes    int64 // memory they are counted to hold (see MemoryConfig.HistoryMaxBytes)
	MaxBytes int64 // the bound of Bytes; 0: none
	// DroppedForSpace counts messages dropped before their policy would
	// have, because the histories held HistoryMaxBytes; Expired those
	// dropped because they were older than their policy's age.
	DroppedForSpace int64
	Expired         int64
}

// HistoryStats returns what the layer's histories hold, as Stats does.
func (l *Memory) HistoryStats() HistoryStats {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	return HistoryStats{
		Groups: len(l.rings), Entries: l.live, Bytes: l.bytes, MaxBytes: l.maxBytes,
		DroppedForSpace: l.droppedSpace, Expired: l.expired,
	}
}

// acquire returns group's ring, made if need be, held by one more send.
func (l *Memory) acquire(group string, p HistoryPolicy) *ring {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	if l.rings == nil {
		l.rings = make(map[string]*ring)
	}
	r := l.rings[group]
	if r == nil {
		r = &ring{group: group, policy: p}
		l.rings[group] = r
		l.bytes += ringCost(group)
		l.armSweepLocked()
	}
	r.users++
	return r
}

// release ends a send's hold on r, removing it if it is left empty.
func (l *Memory) release(r *ring) {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	r.users--
	l.removeIfEmptyLocked(r)
}

func (l *Memory) removeIfEmptyLocked(r *ring) {
	if r.users == 0 && len(r.entries) == 0 && l.rings[r.group] == r {
		delete(l.rings, r.group)
		l.bytes -= ringCost(r.group)
	}
}

// dropFrontLocked drops r's n oldest entries.
func (l *Memory) dropFrontLocked(r *ring, n int) {
	if n <= 0 {
		return
	}
	for i := range r.entries[:n] {
		l.bytes -= r.entries[i].cost()
	}
	l.live -= n
	clear(r.entries[:n])
	r.entries = r.entries[n:]
	if cap(r.entries) > 2*len(r.entries)+16 {
		r.entries = append([]entry(nil), r.entries...)
	}
}

// expiredLocked returns how many of r's oldest entries are older than its
// policy's age at now.
func expiredLocked(r *ring, now time.Time) int {
	n := 0
	if r.policy.Age > 0 {
		for n < len(r.entries) && now.Sub(r.entries[n].at) > r.policy.Age {
			n++
		}
	}
	return n
}

// live reports whether the entry ref names is still kept. Entries of a
// ring are contiguous in id order, so it is kept if its ring is and its
// id is not below the oldest kept.
func (l *Memory) liveLocked(f ref) bool {
	r := f.r
	return l.rings[r.group] == r && len(r.entries) > 0 && r.entries[0].id.Compare(f.id) <= 0
}

// makeRoomLocked drops the oldest entries of every group until the
// histories hold no more than maxBytes. The live ref at the head of the
// queue is the oldest entry kept, and the oldest of its ring.
func (l *Memory) makeRoomLocked() {
	for l.maxBytes > 0 && l.bytes > l.maxBytes && l.qhead < len(l.queue) {
		f := l.queue[l.qhead]
		l.queue[l.qhead] = ref{}
		l.qhead++
		if !l.liveLocked(f) {
			continue
		}
		l.dropFrontLocked(f.r, 1)
		l.droppedSpace++
		l.removeIfEmptyLocked(f.r)
	}
	l.compactLocked()
}

// compactLocked drops stale refs from the head of the queue, and from the
// whole queue when most of it is stale, so that it stays within a small
// multiple of the entries kept.
func (l *Memory) compactLocked() {
	for l.qhead < len(l.queue) && !l.liveLocked(l.queue[l.qhead]) {
		l.queue[l.qhead] = ref{}
		l.qhead++
	}
	if n := len(l.queue) - l.qhead; n > 2*l.live+64 || l.qhead > n+64 {
		q := make([]ref, 0, 2*l.live+16)
		for _, f := range l.queue[l.qhead:] {
			if l.liveLocked(f) {
				q = append(q, f)
			}
		}
		l.queue, l.qhead = q, 0
	}
}

// armSweepLocked schedules a sweep if the policies have an age and none
// is scheduled. The sweep runs on a timer, not a goroutine of its own:
// a layer that holds no history costs nothing, and one never closed
// leaves no goroutine behind.
func (l *Memory) armSweepLocked() {
	if l.sweepEvery <= 0 || l.sweepArmed || l.histClosed {
		return
	}
	l.sweepArmed = true
	if l.sweepTimer == nil {
		l.sweepTimer = time.AfterFunc(l.sweepEvery, l.sweep)
	} else {
		l.sweepTimer.Reset(l.sweepEvery)
	}
}

// sweep drops every entry older than its policy's age and the groups
// left with none, then schedules the next sweep while any group keeps
// history.
func (l *Memory) sweep() {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	l.sweepArmed = false
	if l.histClosed {
		return
	}
	now := time.Now()
	for _, r := range l.rings {
		n := expiredLocked(r, now)
		l.dropFrontLocked(r, n)
		l.expired += int64(n)
		l.removeIfEmptyLocked(r)
	}
	l.compactLocked()
	if len(l.rings) > 0 {
		l.armSweepLocked()
	}
}

// closeHistory stops the sweeps.
func (l *Memory) closeHistory() {
	l.histMu.Lock()
	defer l.histMu.Unlock()
	l.histClosed = true
	if l.sweepTimer != nil {
		l.sweepTimer.Stop()
	}
}

// sendHistory assigns the next id, keeps the message and delivers it,
// under the ring's lock so that members get ids in order.
func (l *Memory) sendHistory(group string, p HistoryPolicy, msg Message) SendResult {
	r := l.acquire(group, p)
	defer l.release(r)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	id := ID{MS: uint64(now.UnixMilli())}
	if id.Compare(r.last) <= 0 {
		id = ID{MS: r.last.MS, Seq: r.last.Seq + 1}
	}
	ids := id.String()
	frame := MessageFromID(msg.typ, ids, FrameWithID(msg.data, ids, group))

	l.histMu.Lock()
	e := entry{id: id, prev: r.last, at: now, msg: frame}
	r.entries = append(r.entries, e)
	r.last = id
	l.live++
	l.bytes += e.cost()
	l.queue = append(l.queue, ref{r: r, id: id})
	expired := expiredLocked(r, now)
	l.dropFrontLocked(r, max(expired, len(r.entries)-r.policy.Size))
	l.expired += int64(expired)
	l.makeRoomLocked()
	l.histMu.Unlock()

	n := l.reg.SendGroupFrom(group, ids, frame.typ, frame.data)
	return SendResult{ID: ids, Delivered: n > 0}
}

// History implements Layer. It never returns a message older than
// its policy's age, whether or not a sweep has dropped it yet. A group
// whose history was removed (every message expired or dropped for space)
// knows no id any more: resuming it, even from its last id, is a gap.
func (l *Memory) History(_ context.Context, group, since string, limit int) ([]Message, error) {
	if err := ValidGroupName(group); err != nil {
		return nil, err
	}
	if _, ok := historyFor(l.policies, group); !ok {
		return nil, fmt.Errorf("%w: group %q", ErrNoHistory, group)
	}
	after, err := ParseID(since)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHistoryGap, err)
	}
	l.histMu.Lock()
	defer l.histMu.Unlock()
	r := l.rings[group]
	if r == nil {
		return nil, fmt.Errorf("%w: group %q holds no history now", ErrHistoryGap, group)
	}
	entries := r.entries[expiredLocked(r, time.Now()):]
	// The first kept message after since must have been published right
	// after it; otherwise something between them is gone.
	i := 0
	for i < len(entries) && entries[i].id.Compare(after) <= 0 {
		i++
	}
	if i == len(entries) {
		if after == r.last && r.last != (ID{}) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s is not the last id of group %q", ErrHistoryGap, since, group)
	}
	if entries[i].prev != after {
		return nil, fmt.Errorf("%w: messages after %s of group %q are no longer kept", ErrHistoryGap, since, group)
	}
	if n := len(entries) - i; n > limit {
		return nil, fmt.Errorf("%w: %d messages to replay, more than %d", ErrHistoryGap, n, limit)
	}
	out := make([]Message, 0, len(entries)-i)
	for _, e := range entries[i:] {
		out = append(out, e.msg)
	}
	return out, nil
}
