// Package layertest is the conformance suite that every
// channellayer.Layer implementation must pass, and the helpers the
// integration tests share.
package layertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
)

// Timeout bounds every wait for a message that should arrive.
const Timeout = 5 * time.Second

// quiet is how long a test waits to be sure a message does NOT arrive.
// Such waits come after a later message has already arrived on the same
// path, so the order of the layer's own delivery makes them reliable.
const quiet = 200 * time.Millisecond

// NewLayer returns a fresh layer for one test. Layers returned for the
// same test share their backing service and namespace, so they behave
// as instances of one deployment; layers of different tests must not see
// each other's traffic. The suite closes every layer it gets.
type NewLayer func(t *testing.T) channellayer.Layer

// Run runs the conformance suite: every method of channellayer.Layer,
// including the answers of a layer that lacks a capability (ErrNoHistory,
// ErrUnsupported, a zero KeyWindow). Tests run in parallel. A layer that
// keeps history must be configured with History; the cases that need a
// capability are skipped for a layer that says it lacks it.
func Run(t *testing.T, newLayer NewLayer) {
	all := append(append(append(append(cases[:len(cases):len(cases)], contractCases...), historyCases...), onceCases...), keyedCases...)
	for _, tc := range all {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, func(t *testing.T) channellayer.Layer {
				l := newLayer(t)
				t.Cleanup(func() { _ = l.Close() })
				return l
			})
		})
	}
}

var cases = []struct {
	name string
	fn   func(*testing.T, NewLayer)
}{
	{"SendToChannel", testSendToChannel},
	{"GroupSendReachesEveryMember", testGroupSend},
	{"GroupDiscard", testGroupDiscard},
	{"CloseChannelLeavesGroups", testCloseChannel},
	{"NoReceivers", testNoReceivers},
	{"InvalidNames", testInvalidNames},
	{"InvalidMessage", testInvalidMessage},
	{"ChannelNamesUnique", testChannelNamesUnique},
	{"ChannelNamesUnguessable", testChannelNamesUnguessable},
	{"GroupsAreIsolated", testGroupsIsolated},
	{"OrderPreserved", testOrder},
	{"AcrossInstances", testAcrossInstances},
	{"ConcurrentJoinLeave", testConcurrentJoinLeave},
	{"EncodedOnce", testEncodedOnce},
}

// Inbox is a groups.Member that records what it receives, with the
// group and history id of group messages that carry one
// (groups.HistoryMember).
type Inbox struct {
	ch chan Delivery
}

// Delivery is one message an Inbox received. Group and ID are set for a
// group message with a history id.
type Delivery struct {
	Group, ID, Type string
	Data            []byte
}

// NewInbox returns an inbox that buffers up to n messages; more fail the
// test that reads it.
func NewInbox(n int) *Inbox { return &Inbox{ch: make(chan Delivery, n)} }

// Deliver implements groups.Member.
func (in *Inbox) Deliver(msgType string, data []byte) { in.DeliverFrom("", "", msgType, data) }

// DeliverFrom implements groups.HistoryMember.
func (in *Inbox) DeliverFrom(group, id, msgType string, data []byte) {
	select {
	case in.ch <- Delivery{group, id, msgType, data}:
	default:
		panic("layertest: inbox full")
	}
}

// Next waits for the next message.
func (in *Inbox) Next(t testing.TB) Delivery {
	t.Helper()
	select {
	case d := <-in.ch:
		return d
	case <-time.After(Timeout):
		t.Fatalf("no message within %v", Timeout)
		return Delivery{}
	}
}

// Poll returns the next message if one arrives within d.
func (in *Inbox) Poll(d time.Duration) (Delivery, bool) {
	select {
	case m := <-in.ch:
		return m, true
	case <-time.After(d):
		return Delivery{}, false
	}
}

// Empty fails the test if a message is waiting or arrives shortly.
func (in *Inbox) Empty(t testing.TB) {
	t.Helper()
	select {
	case d := <-in.ch:
		t.Fatalf("unexpected message %s %s", d.Type, d.Data)
	case <-time.After(quiet):
	}
}

// Msg builds a message of type typ with one "n" field.
func Msg(t testing.TB, typ string, n int) channellayer.Message {
	t.Helper()
	m, err := channellayer.NewMessage(map[string]any{"type": typ, "n": n})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return c
}

func join(t *testing.T, l channellayer.Layer, group string, in *Inbox) string {
	t.Helper()
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if group != "" {
		if err := l.GroupAdd(ctx(t), group, name); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

func expect(t *testing.T, in *Inbox, typ string, n int) {
	t.Helper()
	d := in.Next(t)
	want := fmt.Sprintf(`{"n":%d,"type":%q}`, n, typ)
	if d.Type != typ || string(d.Data) != want {
		t.Fatalf("got %s %s, want %s %s", d.Type, d.Data, typ, want)
	}
}

func testSendToChannel(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	in := NewInbox(4)
	name := join(t, l, "", in)
	if err := channellayer.ValidChannelName(name); err != nil {
		t.Fatalf("NewChannel returned an invalid name: %v", err)
	}
	if err := l.Send(ctx(t), name, Msg(t, "hello.there", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, in, "hello.there", 1)
}

func testGroupSend(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	a, b, c := NewInbox(4), NewInbox(4), NewInbox(4)
	join(t, l, "gossip", a)
	join(t, l, "gossip", b)
	join(t, l, "other", c)
	if _, err := l.GroupSend(ctx(t), "gossip", Msg(t, "name.gossip", 7)); err != nil {
		t.Fatal(err)
	}
	expect(t, a, "name.gossip", 7)
	expect(t, b, "name.gossip", 7)
	// Adding twice must not deliver twice.
	chA := join(t, l, "", NewInbox(1))
	if err := l.GroupAdd(ctx(t), "other", chA); err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "other", chA); err != nil {
		t.Fatal(err)
	}
	c.Empty(t)
	a.Empty(t)
}

func testGroupDiscard(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	a, b := NewInbox(4), NewInbox(4)
	chA := join(t, l, "g", a)
	join(t, l, "g", b)
	if err := l.GroupDiscard(ctx(t), "g", chA); err != nil {
		t.Fatal(err)
	}
	if err := l.GroupDiscard(ctx(t), "g", chA); err != nil {
		t.Fatalf("second discard: %v", err)
	}
	if _, err := l.GroupSend(ctx(t), "g", Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "x", 1)
	a.Empty(t)
	// Re-joining after a discard works.
	if err := l.GroupAdd(ctx(t), "g", chA); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GroupSend(ctx(t), "g", Msg(t, "x", 2)); err != nil {
		t.Fatal(err)
	}
	expect(t, a, "x", 2)
	expect(t, b, "x", 2)
}

func testCloseChannel(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	a, b := NewInbox(4), NewInbox(4)
	chA := join(t, l, "g", a)
	join(t, l, "g", b)
	if err := l.CloseChannel(ctx(t), chA); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GroupSend(ctx(t), "g", Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "x", 1)
	a.Empty(t)
	if err := l.Send(ctx(t), chA, Msg(t, "x", 2)); err == nil {
		a.Empty(t)
	}
	if err := l.GroupAdd(ctx(t), "g", chA); err == nil {
		t.Fatal("GroupAdd of a closed channel succeeded")
	}
}

func testNoReceivers(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	_, err := l.GroupSend(ctx(t), "nobody-here", Msg(t, "x", 1))
	if !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("GroupSend to an empty group: %v, want ErrNoReceivers", err)
	}
	in := NewInbox(1)
	ch := join(t, l, "g", in)
	if err := l.GroupDiscard(ctx(t), "g", ch); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GroupSend(ctx(t), "g", Msg(t, "x", 1)); !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("GroupSend to an emptied group: %v, want ErrNoReceivers", err)
	}
	// A well-formed name that was never handed out.
	err = l.Send(ctx(t), "specific.000000000000!nobody", Msg(t, "x", 1))
	if !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("Send to an unknown channel: %v, want ErrNoReceivers", err)
	}
}

func testInvalidNames(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	in := NewInbox(1)
	ch := join(t, l, "", in)
	bad := []string{"", "has space", "ünicode", strings.Repeat("a", 100), "a!b", "semi;colon", "new\nline"}
	for _, name := range bad {
		if err := l.GroupAdd(ctx(t), name, ch); !errors.Is(err, channellayer.ErrInvalidName) {
			t.Errorf("GroupAdd(%q): %v, want ErrInvalidName", name, err)
		}
		if _, err := l.GroupSend(ctx(t), name, Msg(t, "x", 1)); !errors.Is(err, channellayer.ErrInvalidName) {
			t.Errorf("GroupSend(%q): %v, want ErrInvalidName", name, err)
		}
		if err := l.GroupDiscard(ctx(t), name, ch); !errors.Is(err, channellayer.ErrInvalidName) {
			t.Errorf("GroupDiscard(%q): %v, want ErrInvalidName", name, err)
		}
	}
	for _, name := range []string{"", "!x", "a!b!c", "sp ace!x", strings.Repeat("a", 100)} {
		if err := l.Send(ctx(t), name, Msg(t, "x", 1)); !errors.Is(err, channellayer.ErrInvalidName) {
			t.Errorf("Send(%q): %v, want ErrInvalidName", name, err)
		}
	}
	ok := strings.Repeat("a", 99)
	if err := l.GroupAdd(ctx(t), ok, ch); err != nil {
		t.Errorf("GroupAdd of a 99-byte name: %v", err)
	}
	in.Empty(t)
}

func testInvalidMessage(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	join(t, l, "g", NewInbox(1))
	if _, err := l.GroupSend(ctx(t), "g", channellayer.Message{}); !errors.Is(err, channellayer.ErrInvalidMessage) {
		t.Fatalf("GroupSend of a zero Message: %v, want ErrInvalidMessage", err)
	}
}

func testChannelNamesUnique(t *testing.T, newLayer NewLayer) {
	l1, l2 := newLayer(t), newLayer(t)
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		for _, l := range []channellayer.Layer{l1, l2} {
			name, err := l.NewChannel(NewInbox(1))
			if err != nil {
				t.Fatal(err)
			}
			if seen[name] {
				t.Fatalf("channel name %q handed out twice", name)
			}
			seen[name] = true
		}
	}
}

// testChannelNamesUnguessable: the part of a channel name after its '!'
// carries at least 64 random bits, so that knowing one's own name (a
// client learns it with whoami) tells nothing of the other channels'
// names, to which /api/channels/{name}/send delivers. Consecutive names
// share the part before the '!' and nothing else: their random parts
// differ in about half their bits, and none is a counter's next value.
func testChannelNamesUnguessable(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	var prev []byte
	prefix := ""
	for i := range 50 {
		name, err := l.NewChannel(NewInbox(1))
		if err != nil {
			t.Fatal(err)
		}
		p, local, ok := strings.Cut(name, "!")
		if !ok {
			t.Fatalf("channel name %q has no '!'", name)
		}
		if i > 0 && p != prefix {
			t.Fatalf("channel names of one instance with different parts before '!': %q, %q", prefix, p)
		}
		prefix = p
		raw, err := hex.DecodeString(local)
		if err != nil || len(raw)*8 < 64 {
			t.Fatalf("the part of %q after '!' is not hex of at least 64 bits (%d bytes): %v", name, len(raw), err)
		}
		if prev != nil {
			differ := 0
			for j := range raw {
				differ += bits.OnesCount8(raw[j] ^ prev[j])
			}
			if differ < len(raw)*8/4 {
				t.Fatalf("consecutive names' random parts differ in %d of %d bits", differ, len(raw)*8)
			}
		}
		prev = raw
	}
}

func testGroupsIsolated(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	a, b := NewInbox(4), NewInbox(4)
	join(t, l, "alpha", a)
	join(t, l, "alpha.beta", b)
	if _, err := l.GroupSend(ctx(t), "alpha.beta", Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "x", 1)
	a.Empty(t)
}

func testOrder(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	const n = 500
	in := NewInbox(n)
	ch := join(t, l, "ordered", in)
	for i := 0; i < n; i++ {
		if _, err := l.GroupSend(ctx(t), "ordered", Msg(t, "seq", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		expect(t, in, "seq", i)
	}
	for i := 0; i < 50; i++ {
		if err := l.Send(ctx(t), ch, Msg(t, "direct", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		expect(t, in, "direct", i)
	}
}

// testAcrossInstances checks that two layers made for the same test behave
// as one deployment. For a layer that cannot be shared (the memory layer)
// the two are the same process's view and the test still holds.
func testAcrossInstances(t *testing.T, newLayer NewLayer) {
	l1, l2 := newLayer(t), newLayer(t)
	a, b := NewInbox(4), NewInbox(4)
	join(t, l1, "shared", a)
	chB := join(t, l2, "shared", b)
	shared := sharesState(t, l1, l2)
	if _, err := l1.GroupSend(ctx(t), "shared", Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, a, "x", 1)
	if !shared {
		return
	}
	expect(t, b, "x", 1)
	if err := l1.Send(ctx(t), chB, Msg(t, "direct", 2)); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "direct", 2)
	a.Empty(t)
}

// sharesState reports whether a member on l2 can be reached from l1. It
// probes with a group, not a channel: GroupAdd returns once the member can
// be reached, whereas a new channel may not be reachable from another
// instance yet, which made shared layers look unshared.
func sharesState(t *testing.T, l1, l2 channellayer.Layer) bool {
	in := NewInbox(1)
	join(t, l2, "shares.state", in)
	_, err := l1.GroupSend(ctx(t), "shares.state", Msg(t, "probe", 0))
	if errors.Is(err, channellayer.ErrNoReceivers) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	expect(t, in, "probe", 0)
	return true
}

func testConcurrentJoinLeave(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	stable := NewInbox(64)
	join(t, l, "churn", stable)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				name, err := l.NewChannel(MemberDiscard{})
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.GroupAdd(ctx(t), "churn", name); err != nil {
					t.Error(err)
					return
				}
				if err := l.GroupDiscard(ctx(t), "churn", name); err != nil {
					t.Error(err)
					return
				}
				if err := l.CloseChannel(ctx(t), name); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The group still has its stable member, so it is still subscribed.
	if _, err := l.GroupSend(ctx(t), "churn", Msg(t, "after", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, stable, "after", 1)
}

// MemberDiscard is a groups.Member that drops everything.
type MemberDiscard struct{}

// Deliver implements groups.Member.
func (MemberDiscard) Deliver(string, []byte) {}

func testEncodedOnce(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	const n = 50
	inboxes := make([]*Inbox, n)
	for i := range inboxes {
		inboxes[i] = NewInbox(1)
		join(t, l, "fan", inboxes[i])
	}
	if _, err := l.GroupSend(ctx(t), "fan", Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	first := inboxes[0].Next(t).Data
	for _, in := range inboxes[1:] {
		d := in.Next(t).Data
		if &d[0] != &first[0] {
			t.Fatal("members of one group received separately encoded copies of one message")
		}
	}
}

// RequireServices reports whether integration tests must fail, rather
// than skip, when a service is unreachable (HERALD_REQUIRE_SERVICES=1).
func RequireServices() bool { return os.Getenv("HERALD_REQUIRE_SERVICES") == "1" }

// Unavailable skips t, or fails it when services are required.
func Unavailable(t testing.TB, service string, err error) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s unreachable and HERALD_REQUIRE_SERVICES=1: %v", service, err)
	}
	t.Skipf("%s unreachable, skipping (set HERALD_REQUIRE_SERVICES=1 to fail instead): %v", service, err)
}

// RedisURL returns REDIS_URL, or the local default.
func RedisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// Prefix returns a Redis channel and key prefix unique to this test
// run. When t ends, every key of the Redis at RedisURL whose name starts
// with it is deleted, so that a test leaves nothing in the Redis it
// shares with its user (a test on a Redis it owns has nothing there).
func Prefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := "herald-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := DeleteKeys(p); err != nil && RequireServices() {
			t.Errorf("removing the keys of prefix %s: %v", p, err)
		}
	})
	return p
}

// DeleteKeys deletes every key of the Redis at RedisURL whose name
// starts with prefix. An unreachable Redis holds none of a test's keys:
// that is not an error unless services are required.
func DeleteKeys(prefix string) error {
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		return err
	}
	opt.MaxRetries = -1
	c := redis.NewClient(opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if RequireServices() {
			return err
		}
		return nil
	}
	var cursor uint64
	for range 1_000_000 { // SCAN ends when the cursor comes back to 0
		keys, next, err := c.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := c.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
	return errors.New("layertest: SCAN did not finish")
}

// RedisClient returns a client for RedisURL, closed when t ends, or
// skips t (see Unavailable) when Redis is unreachable.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		Unavailable(t, "Redis", err)
	}
	return c
}
