package layertest

import (
	"errors"
	"testing"

	"github.com/heraldhq/herald/channellayer"
)

var keyedCases = []struct {
	name string
	fn   func(*testing.T, NewLayer)
}{
	{"KeyedSendAppliedOnce", func(t *testing.T, nl NewLayer) { testKeyedSend(t, nl, "keyed") }},
	{"KeyedSendWithHistoryAppliedOnce", func(t *testing.T, nl NewLayer) { testKeyedSend(t, nl, "hist.keyed") }},
	{"KeyedSendNoReceivers", testKeyedNoReceivers},
	{"KeyedSendToChannel", testKeyedChannel},
	{"KeyedSendOnce", testKeyedSendOnce},
	{"UnkeyedSendsAllDelivered", testUnkeyed},
	{"KeysNotApplied", testKeysNotApplied},
}

// keyedSenders returns two instances of a layer that applies keyed sends
// once (a KeyWindow), or skips the test. For a layer whose instances
// share nothing, both are the same instance.
func keyedSenders(t *testing.T, newLayer NewLayer) (l1, l2 channellayer.Layer) {
	l1, l2 = newLayer(t), newLayer(t)
	if l1.KeyWindow() <= 0 {
		t.Skipf("%T does not apply keyed sends once (zero KeyWindow)", l1)
	}
	if !sharesState(t, l1, l2) {
		l2 = l1
	}
	return l1, l2
}

// testKeyedSend sends one keyed message three times, the last from
// another instance when they share state, as a publisher retrying
// through another instance does: members get it once, the history keeps
// it once, and every call reports success. The same key on another
// group is another send.
func testKeyedSend(t *testing.T, newLayer NewLayer, group string) {
	l1, l2 := keyedSenders(t, newLayer)
	a, b, other := NewInbox(8), NewInbox(8), NewInbox(4)
	join(t, l1, group, a)
	join(t, l2, group, b)
	join(t, l1, group+"-other", other)
	msg := Msg(t, "k", 1).WithKey("request-1")
	var results []channellayer.SendResult
	for i, l := range []channellayer.Layer{l1, l1, l2} {
		r, err := l.GroupSend(ctx(t), group, msg)
		if err != nil {
			t.Fatalf("keyed send %d: %v", i+1, err)
		}
		if i > 0 && r != results[0] {
			t.Fatalf("keyed send %d: %+v, want what the first reported, %+v", i+1, r, results[0])
		}
		results = append(results, r)
	}
	if _, err := l2.GroupSend(ctx(t), group+"-other", msg); err != nil {
		t.Fatalf("the same key to another group: %v", err)
	}
	expectN(t, other, "k", 1)
	// A later send on the same path shows that no copy came before it.
	if _, err := l1.GroupSend(ctx(t), group, Msg(t, "end", 0)); err != nil {
		t.Fatal(err)
	}
	var first Delivery
	for _, in := range []*Inbox{a, b} {
		first = expectN(t, in, "k", 1)
		expectN(t, in, "end", 0)
	}
	if first.ID != results[0].ID {
		t.Fatalf("the keyed message was delivered with id %q, its send reported %q", first.ID, results[0].ID)
	}
	msgs, err := l1.History(ctx(t), group, first.ID, 10)
	switch {
	case errors.Is(err, channellayer.ErrNoHistory):
	case err != nil || len(msgs) != 1 || msgs[0].Type() != "end":
		t.Fatalf("history after the keyed message: %v, %v; want only the next message", msgs, err)
	}
}

// testKeyedNoReceivers checks that a repeated keyed send reports what
// the first reported, also when that was ErrNoReceivers (or, for a group
// with history, kept without a member), and that a member who joins
// between the two does not get the message.
func testKeyedNoReceivers(t *testing.T, newLayer NewLayer) {
	l1, l2 := keyedSenders(t, newLayer)
	for _, group := range []string{"keyed.none", "hist.none"} {
		msg := Msg(t, "k", 2).WithKey("request-2")
		first, err := l1.GroupSend(ctx(t), group, msg)
		if first.Delivered || !errors.Is(err, channellayer.ErrNoReceivers) && !first.Kept() {
			t.Fatalf("keyed send to %s with no member: %+v, %v; want ErrNoReceivers or kept", group, first, err)
		}
		firstErr := errors.Is(err, channellayer.ErrNoReceivers)
		in := NewInbox(4)
		join(t, l2, group, in)
		again, err := l2.GroupSend(ctx(t), group, msg)
		if again != first || errors.Is(err, channellayer.ErrNoReceivers) != firstErr {
			t.Fatalf("the keyed send to %s again: %+v, %v; want what the first reported, %+v", group, again, err, first)
		}
		if _, err := l1.GroupSend(ctx(t), group, Msg(t, "end", 0)); err != nil {
			t.Fatal(err)
		}
		expectN(t, in, "end", 0)
	}
}

// testKeyedChannel sends one keyed message to a channel twice, from
// another instance where they share state: the channel gets it once.
func testKeyedChannel(t *testing.T, newLayer NewLayer) {
	l1, l2 := keyedSenders(t, newLayer)
	for _, from := range []channellayer.Layer{l1, l2} {
		in := NewInbox(4)
		name := join(t, l2, "", in)
		msg := Msg(t, "k", 3).WithKey("request-3")
		for i := range 2 {
			if err := from.Send(ctx(t), name, msg); err != nil {
				t.Fatalf("keyed send %d to a channel: %v", i+1, err)
			}
		}
		if err := from.Send(ctx(t), name, Msg(t, "end", 0)); err != nil {
			t.Fatal(err)
		}
		expect(t, in, "k", 3)
		expect(t, in, "end", 0)
	}
}

// testKeyedSendOnce repeats a keyed GroupSendOnce, as a client retrying
// a call it got no answer to: the second reports that it sent (the
// first did), and members get the message once.
func testKeyedSendOnce(t *testing.T, newLayer NewLayer) {
	l1, l2 := keyedSenders(t, newLayer)
	if !sendsOnce(t, l1) {
		t.Skipf("%T does not send once", l1)
	}
	in := NewInbox(4)
	join(t, l1, "hist.keyed-once", in)
	msg := Msg(t, "k", 4).WithKey("row-4")
	var first channellayer.SendResult
	for i, o := range []channellayer.Layer{l1, l2} {
		r, err := o.GroupSendOnce(ctx(t), "src", 4, "hist.keyed-once", msg)
		if err != nil || r.Skipped || !r.Delivered || i > 0 && r != first {
			t.Fatalf("keyed offer %d: %+v, err %v; want sent (by the first), as the first reported", i+1, r, err)
		}
		first = r
	}
	// Another key for the same seq is another instance's offer: dropped.
	if r, err := l2.GroupSendOnce(ctx(t), "src", 4, "hist.keyed-once", msg.WithKey("row-4-elsewhere")); err != nil || !r.Skipped {
		t.Fatalf("offer of a sent seq with another key: %+v, err %v; want it skipped", r, err)
	}
	if _, err := l1.GroupSend(ctx(t), "hist.keyed-once", Msg(t, "end", 0)); err != nil {
		t.Fatal(err)
	}
	expectN(t, in, "k", 4)
	expectN(t, in, "end", 0)
}

// testUnkeyed checks that sends without a key are never taken for
// repeats, however alike.
func testUnkeyed(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	in := NewInbox(8)
	name := join(t, l, "unkeyed", in)
	msg := Msg(t, "u", 5)
	for range 3 {
		if _, err := l.GroupSend(ctx(t), "unkeyed", msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := l.Send(ctx(t), name, msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		expect(t, in, "u", 5)
	}
}

// testKeysNotApplied: a layer with a zero KeyWindow delivers every keyed
// send, as its contract says.
func testKeysNotApplied(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	if l.KeyWindow() > 0 {
		t.Skipf("%T applies keys", l)
	}
	in := NewInbox(4)
	join(t, l, "keys.ignored", in)
	msg := Msg(t, "k", 6).WithKey("request-6")
	for range 2 {
		if _, err := l.GroupSend(ctx(t), "keys.ignored", msg); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, in, "k", 6)
	expect(t, in, "k", 6)
}
