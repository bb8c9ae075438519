package layertest

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// History is the history policy the suite expects a layer that keeps
// history to be configured with: "hist.*" groups keep
// 1000 messages, "small.*" groups 10, both for at most an hour,
// "brief.*" groups 100 for at most BriefAge, and nothing else keeps any.
var History = []channellayer.HistoryPolicy{
	{Pattern: "hist.*", Size: 1000, Age: time.Hour},
	{Pattern: "small.*", Size: 10, Age: time.Hour},
	{Pattern: "brief.*", Size: 100, Age: BriefAge},
}

// BriefAge is the age of the "brief.*" groups of History: short, so that
// the suite can watch messages expire.
const BriefAge = 400 * time.Millisecond

var historyCases = []struct {
	name string
	fn   func(*testing.T, NewLayer)
}{
	{"HistoryIDs", testHistoryIDs},
	{"HistorySendResult", testHistorySendResult},
	{"HistoryReplay", testHistoryReplay},
	{"HistoryGap", testHistoryGap},
	{"HistoryAcrossInstances", testHistoryAcrossInstances},
	{"HistoryNeverOlderThanAge", testHistoryNeverOlderThanAge},
	{"HistoryExpiredGroupForgotten", testHistoryExpiredGroupForgotten},
}

// keepsHistory skips the test unless l keeps the history of History's
// groups: a layer that keeps none answers ErrNoHistory for every group.
// Either way, a group no policy covers answers ErrNoHistory.
func keepsHistory(t *testing.T, l channellayer.Layer) channellayer.Layer {
	t.Helper()
	if _, err := l.History(ctx(t), "nohist", "0-0", 10); !errors.Is(err, channellayer.ErrNoHistory) {
		t.Fatalf("History of a group without history: %v, want ErrNoHistory", err)
	}
	if _, err := l.History(ctx(t), "hist.probe", "0-0", 10); errors.Is(err, channellayer.ErrNoHistory) {
		t.Skipf("%T keeps no history", l)
	}
	return l
}

func testHistoryIDs(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	in := NewInbox(16)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"hist.a", "nohist"} {
		if err := l.GroupAdd(ctx(t), g, name); err != nil {
			t.Fatal(err)
		}
	}
	var last channellayer.ID
	for i := range 5 {
		r, err := l.GroupSend(ctx(t), "hist.a", Msg(t, "t.x", i))
		if err != nil {
			t.Fatal(err)
		}
		d := in.Next(t)
		if r.ID != d.ID || !r.Delivered || !r.Kept() || r.Skipped {
			t.Fatalf("send %d: result %+v, delivered with id %q; want that id, delivered and kept", i, r, d.ID)
		}
		id, err := channellayer.ParseID(d.ID)
		if err != nil || d.Group != "hist.a" {
			t.Fatalf("delivery %d: group %q id %q: %v", i, d.Group, d.ID, err)
		}
		if id.Compare(last) <= 0 {
			t.Fatalf("id %v does not follow %v", id, last)
		}
		last = id
		want := fmt.Sprintf(`{"n":%d,"type":"t.x","herald_id":"%s","herald_group":"hist.a"}`, i, d.ID)
		if string(d.Data) != want {
			t.Fatalf("frame %s, want %s", d.Data, want)
		}
	}
	r, err := l.GroupSend(ctx(t), "nohist", Msg(t, "t.x", 9))
	if err != nil {
		t.Fatal(err)
	}
	if r != (channellayer.SendResult{Delivered: true}) {
		t.Fatalf("send to a group without history: %+v, want delivered without id", r)
	}
	if d := in.Next(t); d.ID != "" || string(d.Data) != `{"n":9,"type":"t.x"}` {
		t.Fatalf("a group without history delivered id %q, frame %s", d.ID, d.Data)
	}
}

// testHistorySendResult: a send to a group with history and no member
// went somewhere: no error, the id it got, not delivered; the message is
// what History returns after the id before it.
func testHistorySendResult(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	first, err := l.GroupSend(ctx(t), "hist.kept", Msg(t, "t.k", 0))
	if err != nil || !first.Kept() || first.Delivered || first.Skipped {
		t.Fatalf("send to a group with history and no member: %+v, %v; want kept, not delivered, no error", first, err)
	}
	second, err := l.GroupSend(ctx(t), "hist.kept", Msg(t, "t.k", 1))
	if err != nil || !second.Kept() {
		t.Fatalf("second send: %+v, %v", second, err)
	}
	msgs, err := l.History(ctx(t), "hist.kept", first.ID, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ID() != second.ID {
		t.Fatalf("history after the first id: %v, %v; want the second message, id %s", msgs, err, second.ID)
	}
}

func testHistoryReplay(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	h := l
	in := NewInbox(64)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "hist.r", name); err != nil {
		t.Fatal(err)
	}
	var got []Delivery
	for i := range 10 {
		if _, err := l.GroupSend(ctx(t), "hist.r", Msg(t, "t.r", i)); err != nil {
			t.Fatal(err)
		}
		got = append(got, in.Next(t))
	}
	// Sent with no member: still kept.
	if err := l.GroupDiscard(ctx(t), "hist.r", name); err != nil {
		t.Fatal(err)
	}
	if r, err := l.GroupSend(ctx(t), "hist.r", Msg(t, "t.r", 10)); err != nil || !r.Kept() || r.Delivered {
		t.Fatalf("send to a group with no member: %+v, %v; want kept, not delivered", r, err)
	}
	msgs, err := h.History(ctx(t), "hist.r", got[2].ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 8 {
		t.Fatalf("history after the 3rd message has %d messages, want 8", len(msgs))
	}
	for i, m := range msgs[:7] {
		if m.ID() != got[3+i].ID || string(m.Bytes()) != string(got[3+i].Data) || m.Type() != "t.r" {
			t.Fatalf("history[%d] = %s %s, want %s %s", i, m.ID(), m.Bytes(), got[3+i].ID, got[3+i].Data)
		}
	}
	if want := `{"n":10,"type":"t.r","herald_id":"` + msgs[7].ID() + `","herald_group":"hist.r"}`; string(msgs[7].Bytes()) != want {
		t.Fatalf("last = %s, want %s", msgs[7].Bytes(), want)
	}
	if msgs, err := h.History(ctx(t), "hist.r", msgs[7].ID(), 100); err != nil || len(msgs) != 0 {
		t.Fatalf("history after the last id: %d messages, %v; want none", len(msgs), err)
	}
	if _, err := h.History(ctx(t), "hist.r", got[0].ID, 5); !errors.Is(err, channellayer.ErrHistoryGap) {
		t.Fatalf("history of 10 with limit 5: %v, want ErrHistoryGap", err)
	}
}

func testHistoryGap(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	h := l
	in := NewInbox(1)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "small.g", name); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GroupSend(ctx(t), "small.g", Msg(t, "t.g", 0)); err != nil {
		t.Fatal(err)
	}
	first := in.Next(t).ID
	if err := l.GroupDiscard(ctx(t), "small.g", name); err != nil {
		t.Fatal(err)
	}
	// Enough to trim even a history that trims approximately.
	for i := range 300 {
		_, _ = l.GroupSend(ctx(t), "small.g", Msg(t, "t.g", i+1))
	}
	for _, since := range []string{first, "1-0", "99999999999999-0", "x", ""} {
		if _, err := h.History(ctx(t), "small.g", since, 1000); !errors.Is(err, channellayer.ErrHistoryGap) {
			t.Errorf("history after %q: %v, want ErrHistoryGap", since, err)
		}
	}
	if _, err := h.History(ctx(t), "nohist", first, 10); !errors.Is(err, channellayer.ErrNoHistory) || errors.Is(err, channellayer.ErrHistoryGap) {
		t.Errorf("history of a group without one: %v, want ErrNoHistory", err)
	}
}

func testHistoryAcrossInstances(t *testing.T, newLayer NewLayer) {
	l1, l2 := newLayer(t), newLayer(t)
	if !sharesState(t, l1, l2) {
		t.Skip("instances of this layer do not share state")
	}
	h2 := keepsHistory(t, l2)
	in := NewInbox(4)
	name, err := l2.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.GroupAdd(ctx(t), "hist.x", name); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := l1.GroupSend(ctx(t), "hist.x", Msg(t, "t.x", i)); err != nil {
			t.Fatal(err)
		}
	}
	d0 := in.Next(t)
	in.Next(t)
	d2 := in.Next(t)
	msgs, err := h2.History(ctx(t), "hist.x", d0.ID, 10)
	if err != nil || len(msgs) != 2 || msgs[1].ID() != d2.ID || string(msgs[1].Bytes()) != string(d2.Data) {
		t.Fatalf("history read on another instance: %v, %v", msgs, err)
	}
}

// testHistoryNeverOlderThanAge: a message older than its group's age is
// never returned, though the group is never sent to again and a younger
// message keeps the group's history alive. Resuming from before it is a
// gap, so the client resyncs.
func testHistoryNeverOlderThanAge(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	h := l
	in := NewInbox(8)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "brief.a", name); err != nil {
		t.Fatal(err)
	}
	send := func(n int) Delivery {
		t.Helper()
		if _, err := l.GroupSend(ctx(t), "brief.a", Msg(t, "t.b", n)); err != nil {
			t.Fatal(err)
		}
		return in.Next(t)
	}
	d0 := send(0)
	before1 := time.Now()
	d1 := send(1)
	after1 := time.Now() // d1 was kept between before1 and after1
	<-time.After(BriefAge / 2)
	d2 := send(2)
	// Never sent to again: read until the layer says d1 is gone.
	const slack = 5 * time.Millisecond // ids and Redis' TIME have whole milliseconds
	deadline := time.Now().Add(BriefAge + Timeout)
	for {
		readAt := time.Now()
		msgs, err := h.History(ctx(t), "brief.a", d0.ID, 10)
		readEnd := time.Now()
		switch {
		case err == nil:
			if len(msgs) != 2 || msgs[0].ID() != d1.ID || msgs[1].ID() != d2.ID {
				t.Fatalf("history after the first message: %d messages, want the 2 after it", len(msgs))
			}
			if old := readAt.Sub(after1); old > BriefAge+slack {
				t.Fatalf("history returned a message at least %v old; the group keeps none older than %v", old, BriefAge)
			}
		case errors.Is(err, channellayer.ErrHistoryGap):
			if young := readEnd.Sub(before1); young < BriefAge-slack {
				t.Fatalf("history dropped a message at most %v old, younger than the age %v: %v", young, BriefAge, err)
			}
			return
		default:
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a message older than %v still returned after %v", BriefAge, time.Since(before1))
		}
		<-time.After(10 * time.Millisecond)
	}
}

// testHistoryExpiredGroupForgotten: once every message of a group is
// older than its age, the group's history is gone altogether, without
// another send: even its last id is unknown, so a client resuming from
// it resyncs (it cannot be told whether it missed anything).
func testHistoryExpiredGroupForgotten(t *testing.T, newLayer NewLayer) {
	l := keepsHistory(t, newLayer(t))
	h := l
	if r, err := l.GroupSend(ctx(t), "brief.f", Msg(t, "t.f", 0)); err != nil || !r.Kept() {
		t.Fatalf("send to a group with no member: %+v, %v; want kept", r, err)
	}
	in := NewInbox(2)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "brief.f", name); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if _, err := l.GroupSend(ctx(t), "brief.f", Msg(t, "t.f", 1)); err != nil {
		t.Fatal(err)
	}
	// A layer that recovers a group from just before it subscribed may
	// deliver the first message too.
	last := in.Next(t)
	if !bytes.Contains(last.Data, []byte(`"n":1`)) {
		last = in.Next(t)
	}
	if msgs, err := h.History(ctx(t), "brief.f", last.ID, 10); err != nil || len(msgs) != 0 {
		t.Fatalf("history after the last id, at once: %d messages, %v; want none, no error", len(msgs), err)
	}
	deadline := time.Now().Add(BriefAge + Timeout)
	for {
		_, err := h.History(ctx(t), "brief.f", last.ID, 10)
		if errors.Is(err, channellayer.ErrHistoryGap) {
			if since := time.Since(sent); since < BriefAge {
				t.Fatalf("history forgot the group %v after its last message, before its age %v", since, BriefAge)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the history of a group whose messages are all older than %v still stands %v after the last", BriefAge, time.Since(sent))
		}
		<-time.After(10 * time.Millisecond)
	}
}
