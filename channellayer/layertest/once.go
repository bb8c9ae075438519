package layertest

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/heraldhq/herald/channellayer"
)

var onceCases = []struct {
	name string
	fn   func(*testing.T, NewLayer)
}{
	{"SendOnce", func(t *testing.T, nl NewLayer) { testSendOnce(t, nl, "once") }},
	{"SendOnceWithHistory", func(t *testing.T, nl NewLayer) { testSendOnce(t, nl, "hist.once") }},
	{"SendOnceSources", testSendOnceSources},
	{"SendOnceUnsupported", testSendOnceUnsupported},
}

// sendsOnce reports whether l sends once; a layer that cannot says so
// with ErrUnsupported from LastSent.
func sendsOnce(t *testing.T, l channellayer.Layer) bool {
	t.Helper()
	_, _, err := l.LastSent(ctx(t), "probe", "once.probe")
	if errors.Is(err, channellayer.ErrUnsupported) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// onceSenders returns two instances of a layer that sends once, or skips
// the test. For a layer whose instances share nothing (the memory
// layer), both are the same instance.
func onceSenders(t *testing.T, newLayer NewLayer) (l1, l2 channellayer.Layer) {
	l1, l2 = newLayer(t), newLayer(t)
	if !sendsOnce(t, l1) {
		t.Skipf("%T does not send once", l1)
	}
	if !sharesState(t, l1, l2) {
		l2 = l1
	}
	return l1, l2
}

// testSendOnce has two instances offer the same stream of messages at
// the same time, as every instance's notifier does. Each message is sent
// by exactly one of them, and members of both instances get every
// message once, in order.
func testSendOnce(t *testing.T, newLayer NewLayer, group string) {
	l1, l2 := onceSenders(t, newLayer)
	const n = 300
	a, b := NewInbox(n+1), NewInbox(n+1)
	join(t, l1, group, a)
	join(t, l2, group, b)

	senders := make([][]bool, 2) // which seqs each instance sent
	var wg sync.WaitGroup
	for i, l := range []channellayer.Layer{l1, l2} {
		senders[i] = make([]bool, n)
		wg.Go(func() {
			for seq := range n {
				r, err := l.GroupSendOnce(ctx(t), "src", int64(seq), group, Msg(t, "seq", seq))
				if err != nil {
					t.Errorf("offer %d: %v", seq, err)
					return
				}
				if !r.Skipped && !r.Delivered {
					t.Errorf("offer %d: %+v, sent but not delivered", seq, r)
				}
				senders[i][seq] = !r.Skipped
			}
		})
	}
	wg.Wait()
	for seq := range n {
		if senders[0][seq] == senders[1][seq] {
			t.Fatalf("seq %d: sent by instance 1: %v, by instance 2: %v; want exactly one", seq, senders[0][seq], senders[1][seq])
		}
	}
	// A late offer of a sent seq, and of an older one, does nothing.
	for _, seq := range []int64{n - 1, 0} {
		r, err := l2.GroupSendOnce(ctx(t), "src", seq, group, Msg(t, "seq", int(seq)))
		if err != nil || r != (channellayer.SendResult{Skipped: true}) {
			t.Fatalf("offer of seq %d again: %+v, err %v; want it skipped", seq, r, err)
		}
	}
	if _, err := l1.GroupSend(ctx(t), group, Msg(t, "end", 0)); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*Inbox{a, b} {
		for seq := range n {
			expectN(t, in, "seq", seq)
		}
		expectN(t, in, "end", 0)
	}
}

// testSendOnceSources checks that sources are independent, and that
// arguments no source can have are refused.
func testSendOnceSources(t *testing.T, newLayer NewLayer) {
	l, _ := onceSenders(t, newLayer)
	in := NewInbox(4)
	join(t, l, "sources", in)
	ol := l
	for i, o := range []struct {
		source string
		seq    int64
	}{{"a", 5}, {"b", 1}} {
		if r, err := ol.GroupSendOnce(ctx(t), o.source, o.seq, "sources", Msg(t, "x", i)); err != nil || r.Skipped || !r.Delivered {
			t.Fatalf("offer %s/%d: %+v, err %v", o.source, o.seq, r, err)
		}
		expect(t, in, "x", i)
	}
	for _, want := range []struct {
		source string
		seq    int64
		ok     bool
	}{{"a", 5, true}, {"b", 1, true}, {"never", 0, false}} {
		if seq, ok, err := ol.LastSent(ctx(t), want.source, "sources"); err != nil || seq != want.seq || ok != want.ok {
			t.Errorf("LastSent(%q) = %d, %v, %v; want %d, %v", want.source, seq, ok, err, want.seq, want.ok)
		}
	}
	if _, err := ol.GroupSendOnce(ctx(t), "", 1, "sources", Msg(t, "x", 0)); err == nil {
		t.Error("an empty source was accepted")
	}
	if _, err := ol.GroupSendOnce(ctx(t), "a", -1, "sources", Msg(t, "x", 0)); err == nil {
		t.Error("a negative seq was accepted")
	}
	if _, err := ol.GroupSendOnce(ctx(t), "a", 6, "bad group", Msg(t, "x", 0)); err == nil {
		t.Error("an invalid group was accepted")
	}
	in.Empty(t)
}

// testSendOnceUnsupported: a layer that cannot send once says so from
// both methods, and an offer delivers nothing.
func testSendOnceUnsupported(t *testing.T, newLayer NewLayer) {
	l := newLayer(t)
	if sendsOnce(t, l) {
		t.Skipf("%T sends once", l)
	}
	in := NewInbox(4)
	join(t, l, "once.none", in)
	if _, err := l.GroupSendOnce(ctx(t), "src", 1, "once.none", Msg(t, "x", 1)); !errors.Is(err, channellayer.ErrUnsupported) {
		t.Fatalf("GroupSendOnce: %v, want ErrUnsupported", err)
	}
	if _, err := l.GroupSend(ctx(t), "once.none", Msg(t, "end", 0)); err != nil {
		t.Fatal(err)
	}
	expect(t, in, "end", 0)
}

// expectN is expect for frames that may carry more fields than the
// message sent (a history id): it checks the type and the "n" field.
func expectN(t *testing.T, in *Inbox, typ string, n int) Delivery {
	t.Helper()
	d := in.Next(t)
	checkN(t, d, typ, n)
	return d
}

// checkN checks the type and the "n" field of a delivery.
func checkN(t *testing.T, d Delivery, typ string, n int) {
	t.Helper()
	var got struct {
		Type string
		N    int
	}
	if err := json.Unmarshal(d.Data, &got); err != nil || d.Type != typ || got.Type != typ || got.N != n {
		t.Fatalf("got %s %s, want type %s with n %d", d.Type, d.Data, typ, n)
	}
}
