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
}

// NewMemoryWith returns an empty in-memory layer configured by cfg.
func NewMemoryWith(cfg MemoryConfig) (*Memory, error) {
	policies, err := checkPolicies(cfg.History)
	if err != nil {
		return nil, err
	}
	l := NewMemory()
	l.policies = policies
	return l, nil
}

// ring is one group's history in a Memory layer.
type ring struct {
	mu      sync.Mutex
	policy  HistoryPolicy
	last    ID
	entries []entry // oldest first
}

type entry struct {
	id, prev ID
	at       time.Time
	msg      Message // the frame members received, id included
}

func (l *Memory) ring(group string) *ring {
	p, ok := historyFor(l.policies, group)
	if !ok {
		return nil
	}
	l.histMu.Lock()
	defer l.histMu.Unlock()
	if l.rings == nil {
		l.rings = make(map[string]*ring)
	}
	r := l.rings[group]
	if r == nil {
		r = &ring{policy: p}
		l.rings[group] = r
	}
	return r
}

// sendHistory assigns the next id, keeps the message and delivers it,
// all under the ring's lock so that members get ids in order.
func (l *Memory) sendHistory(r *ring, group string, msg Message) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	id := ID{MS: uint64(now.UnixMilli())}
	if id.Compare(r.last) <= 0 {
		id = ID{MS: r.last.MS, Seq: r.last.Seq + 1}
	}
	ids := id.String()
	frame := MessageFromID(msg.typ, ids, FrameWithID(msg.data, ids, group))
	r.entries = append(r.entries, entry{id: id, prev: r.last, at: now, msg: frame})
	r.last = id
	drop := max(0, len(r.entries)-r.policy.Size)
	if r.policy.Age > 0 {
		for drop < len(r.entries) && now.Sub(r.entries[drop].at) > r.policy.Age {
			drop++
		}
	}
	if drop > 0 {
		clear(r.entries[:drop])
		r.entries = r.entries[drop:]
		if cap(r.entries) > 2*r.policy.Size+16 {
			r.entries = append([]entry(nil), r.entries...)
		}
	}
	return l.reg.SendGroupFrom(group, ids, frame.typ, frame.data)
}

// HasHistory implements Historian.
func (l *Memory) HasHistory(group string) bool {
	_, ok := historyFor(l.policies, group)
	return ok
}

// History implements Historian.
func (l *Memory) History(_ context.Context, group, since string, limit int) ([]Message, error) {
	if err := ValidGroupName(group); err != nil {
		return nil, err
	}
	after, err := ParseID(since)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHistoryGap, err)
	}
	r := l.ring(group)
	if r == nil {
		return nil, fmt.Errorf("%w: group %q keeps no history", ErrHistoryGap, group)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.policy.Age > 0 {
		now := time.Now()
		for len(r.entries) > 0 && now.Sub(r.entries[0].at) > r.policy.Age {
			r.entries[0] = entry{}
			r.entries = r.entries[1:]
		}
	}
	// The first kept message after since must have been published right
	// after it; otherwise something between them is gone.
	i := 0
	for i < len(r.entries) && r.entries[i].id.Compare(after) <= 0 {
		i++
	}
	if i == len(r.entries) {
		if after == r.last && r.last != (ID{}) {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s is not the last id of group %q", ErrHistoryGap, since, group)
	}
	if r.entries[i].prev != after {
		return nil, fmt.Errorf("%w: messages after %s of group %q are no longer kept", ErrHistoryGap, since, group)
	}
	if n := len(r.entries) - i; n > limit {
		return nil, fmt.Errorf("%w: %d messages to replay, more than %d", ErrHistoryGap, n, limit)
	}
	out := make([]Message, 0, len(r.entries)-i)
	for _, e := range r.entries[i:] {
		out = append(out, e.msg)
	}
	return out, nil
}
