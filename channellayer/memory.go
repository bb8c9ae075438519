package channellayer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/groups"
)

// Memory is a Layer that lives in one process. It needs no service, and
// instances do not share it: use it for a single instance. The zero value
// is not usable; call NewMemory.
type Memory struct {
	prefix string
	reg    groups.Registry

	mu     sync.RWMutex
	closed bool

	policies   []HistoryPolicy
	sweepEvery time.Duration // 0: no policy has an age

	// histMu guards the histories: every ring's entries and last, the
	// queue of every entry kept, oldest first, and the counts.
	histMu       sync.Mutex
	rings        map[string]*ring
	queue        []ref
	qhead        int // queue[:qhead] is spent
	live         int // entries kept
	bytes        int64
	maxBytes     int64 // 0: no bound
	droppedSpace int64
	expired      int64
	sweepTimer   *time.Timer
	sweepArmed   bool
	histClosed   bool

	onceMu sync.Mutex
	once   map[string]int64 // last seq sent, by source

	keys keyRecords // keyed sends applied
}

var _ Layer = (*Memory)(nil)

// NewMemory returns an empty in-memory layer that keeps DefaultHistory,
// within DefaultHistoryMaxBytes.
func NewMemory() *Memory {
	l := &Memory{prefix: "memory." + randomID() + "!", maxBytes: DefaultHistoryMaxBytes}
	l.setPolicies(DefaultHistory)
	return l
}

// NewChannel implements Layer.
func (l *Memory) NewChannel(m groups.Member) (string, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return "", ErrClosed
	}
	name := l.prefix + LocalName()
	l.reg.AddChannel(name, m)
	return name, nil
}

// CloseChannel implements Layer.
func (l *Memory) CloseChannel(_ context.Context, channel string) error {
	l.reg.RemoveChannel(channel)
	return nil
}

// Send implements Layer.
func (l *Memory) Send(_ context.Context, channel string, msg Message) error {
	if err := l.check(ValidChannelName(channel), msg); err != nil {
		return err
	}
	if !sendChannelKeyed(&l.keys, &l.reg, channel, msg) {
		return fmt.Errorf("%w: no channel %q", ErrNoReceivers, channel)
	}
	return nil
}

// sendChannelKeyed delivers msg to a channel of reg, once per key for a
// keyed message, and reports whether the channel exists (existed, for a
// send applied before).
func sendChannelKeyed(keys *keyRecords, reg *groups.Registry, channel string, msg Message) bool {
	if msg.key == "" {
		return reg.SendChannel(channel, msg.typ, msg.data)
	}
	r, _ := keys.apply("channel "+channel, msg.key, func() SendResult {
		return SendResult{Delivered: reg.SendChannel(channel, msg.typ, msg.data)}
	})
	return r.Delivered
}

// KeyWindow implements Layer.
func (l *Memory) KeyWindow() time.Duration { return KeyWindow }

// GroupAdd implements Layer.
func (l *Memory) GroupAdd(_ context.Context, group, channel string) error {
	if err := l.checkNames(group, channel); err != nil {
		return err
	}
	_, err := l.reg.Join(group, channel)
	return err
}

// GroupDiscard implements Layer.
func (l *Memory) GroupDiscard(_ context.Context, group, channel string) error {
	if err := l.checkNames(group, channel); err != nil {
		return err
	}
	l.reg.Leave(group, channel)
	return nil
}

// GroupSend implements Layer. A message to a group with history is kept,
// with its id, even when the group has no member now.
func (l *Memory) GroupSend(ctx context.Context, group string, msg Message) (SendResult, error) {
	return l.GroupSendLocal(ctx, group, msg)
}

// GroupSendLocal implements Layer. For Memory it is GroupSend, history
// included: a keyed message is applied once per key and group (see
// Layer.KeyWindow).
func (l *Memory) GroupSendLocal(_ context.Context, group string, msg Message) (SendResult, error) {
	if err := l.check(ValidGroupName(group), msg); err != nil {
		return SendResult{}, err
	}
	send := func() SendResult {
		if p, ok := historyFor(l.policies, group); ok {
			return l.sendHistory(group, p, msg)
		}
		return SendResult{Delivered: l.reg.SendGroup(group, msg.typ, msg.data) > 0}
	}
	var r SendResult
	if msg.key == "" {
		r = send()
	} else {
		r, _ = l.keys.apply("group "+group, msg.key, send)
	}
	if !r.Delivered && !r.Kept() {
		return r, fmt.Errorf("%w: group %q has no member", ErrNoReceivers, group)
	}
	return r, nil
}

// GroupSendOnce implements Layer. The lock is held through the send, so
// that offers racing each other are sent in seq order.
func (l *Memory) GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg Message) (SendResult, error) {
	if err := checkSource(source, seq); err != nil {
		return SendResult{}, err
	}
	l.onceMu.Lock()
	defer l.onceMu.Unlock()
	if last, ok := l.once[source]; ok && seq <= last {
		if msg.key != "" && l.keys.seen("group "+group, msg.key) {
			// The same call again: it reports what the first did.
			return l.GroupSendLocal(ctx, group, msg)
		}
		return SendResult{Skipped: true}, nil
	}
	r, err := l.GroupSendLocal(ctx, group, msg)
	if err == nil || errors.Is(err, ErrNoReceivers) {
		if l.once == nil {
			l.once = make(map[string]int64)
		}
		l.once[source] = seq
	}
	return r, err
}

// LastSent implements Layer. The memory layer keeps one record per
// source, whatever its group.
func (l *Memory) LastSent(_ context.Context, source, _ string) (int64, bool, error) {
	if err := checkSource(source, 0); err != nil {
		return 0, false, err
	}
	l.onceMu.Lock()
	defer l.onceMu.Unlock()
	seq, ok := l.once[source]
	return seq, ok, nil
}

// Check implements Layer: a memory layer is always reachable until
// closed.
func (l *Memory) Check(context.Context) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Layer. It also stops the sweeps of expired history.
func (l *Memory) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.closeHistory()
	return nil
}

func (l *Memory) checkNames(group, channel string) error {
	if err := ValidGroupName(group); err != nil {
		return err
	}
	if err := ValidChannelName(channel); err != nil {
		return err
	}
	return l.Check(context.Background())
}

func (l *Memory) check(nameErr error, msg Message) error {
	return CheckSend(nameErr, msg, l.Check(context.Background()) != nil)
}

// LocalNameBytes is how many random bytes make the part of a channel
// name after its '!' (LocalName): 128 bits, as many as a channels_redis
// name carries, so that nobody who knows one channel's name can guess
// another's.
const LocalNameBytes = 16

// LocalName returns the part of a new channel name after its '!': 32
// random hex characters (LocalNameBytes from crypto/rand), unrelated to
// any other name. A channel name is the address /api/channels/{name}/send
// delivers to, so it must not be guessable from another; a counter would
// let anyone who learned their own name reach their neighbours'.
func LocalName() string {
	var b [LocalNameBytes]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// randomID returns 12 random hex characters.
func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
