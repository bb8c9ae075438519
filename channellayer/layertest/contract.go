package layertest

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// contractCases cover the methods every layer has whatever it can do:
// what a group send reports, local sends, the probe and the counters.
var contractCases = []struct {
	name string
	fn   func(*testing.T, NewLayer)
}{
	{"GroupSendResult", testGroupSendResult},
	{"GroupSendLocal", testGroupSendLocal},
	{"Check", testCheck},
	{"Stats", testStats},
}

// testGroupSendResult: a send to a group without history that reached a
// member reports it delivered, with no id; one that went nowhere reports
// nothing and ErrNoReceivers.
func testGroupSendResult(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	in := NewInbox(2)
	join(t, l, "result.some", in)
	r, err := l.GroupSend(ctx(t), "result.some", Msg(t, "x", 1))
	if err != nil || r != (channellayer.SendResult{Delivered: true}) {
		t.Fatalf("send to a group with a member: %+v, %v; want delivered, no id", r, err)
	}
	expect(t, in, "x", 1)
	r, err = l.GroupSend(ctx(t), "result.none", Msg(t, "x", 2))
	if !errors.Is(err, channellayer.ErrNoReceivers) || r != (channellayer.SendResult{}) {
		t.Fatalf("send to a group with no member: %+v, %v; want nothing and ErrNoReceivers", r, err)
	}
}

// testGroupSendLocal: a local send reaches this instance's members of
// the group and no other instance's; with none here it is ErrNoReceivers.
func testGroupSendLocal(t *testing.T, newLayer NewLayer) {
	l1, l2 := newLayer(t), newLayer(t)
	shared := sharesState(t, l1, l2)
	a, b := NewInbox(4), NewInbox(4)
	join(t, l1, "local.g", a)
	if shared {
		join(t, l2, "local.g", b)
	}
	r, err := l1.GroupSendLocal(ctx(t), "local.g", Msg(t, "x", 1))
	if err != nil || !r.Delivered || r.Skipped {
		t.Fatalf("local send with a local member: %+v, %v", r, err)
	}
	expect(t, a, "x", 1)
	if shared {
		if _, err := l2.GroupSendLocal(ctx(t), "local.g", Msg(t, "x", 2)); err != nil {
			t.Fatal(err)
		}
		// b's next message is the second: the first stayed on l1.
		expect(t, b, "x", 2)
		a.Empty(t)
		join(t, l2, "local.remote-only", NewInbox(1))
		if _, err := l1.GroupSendLocal(ctx(t), "local.remote-only", Msg(t, "x", 3)); !errors.Is(err, channellayer.ErrNoReceivers) {
			t.Fatalf("local send to a group with members elsewhere only: %v, want ErrNoReceivers", err)
		}
	}
	if _, err := l1.GroupSendLocal(ctx(t), "local.none", Msg(t, "x", 4)); !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("local send to a group with no member: %v, want ErrNoReceivers", err)
	}
	if _, err := l1.GroupSendLocal(ctx(t), "bad name", Msg(t, "x", 5)); !errors.Is(err, channellayer.ErrInvalidName) {
		t.Fatalf("local send to a bad name: %v, want ErrInvalidName", err)
	}
}

// testCheck: a layer whose service is up passes its probe (once it has
// connected), and a closed layer fails it with ErrClosed.
func testCheck(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	deadline := time.Now().Add(Timeout)
	for {
		err := l.Check(ctx(t))
		if err == nil {
			break
		}
		if !errors.Is(err, channellayer.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Check of a layer whose service is up: %v", err)
		}
		<-time.After(10 * time.Millisecond)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(ctx(t)); !errors.Is(err, channellayer.ErrClosed) {
		t.Fatalf("Check after Close: %v, want ErrClosed", err)
	}
}

// testStats: Stats counts this instance's channels, groups and members.
func testStats(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	a := join(t, l, "stats.1", NewInbox(1))
	if err := l.GroupAdd(ctx(t), "stats.2", a); err != nil {
		t.Fatal(err)
	}
	join(t, l, "stats.1", NewInbox(1))
	if got, want := l.Stats().Local, (groups.Stats{Channels: 2, Groups: 2, Members: 3}); got != want {
		t.Fatalf("Stats().Local = %+v, want %+v", got, want)
	}
}
