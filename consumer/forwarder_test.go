package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

func newForwarder(t *testing.T, f consumer.Forwarder) consumer.Constructor {
	t.Helper()
	ctor, err := consumer.NewForwarder(f)
	if err != nil {
		t.Fatal(err)
	}
	return ctor
}

// subscribe asks for group and returns the answer frame.
func subscribe(t *testing.T, c *websocket.Conn, group string) map[string]string {
	t.Helper()
	write(t, c, websocket.MessageText, `{"type":"subscribe","group":"`+group+`"}`)
	var answer map[string]string
	if err := json.Unmarshal([]byte(read(t, c)), &answer); err != nil {
		t.Fatal(err)
	}
	return answer
}

// A route forwards the types it names, to the groups its client
// subscribed to, and drops the rest as not forwarded.
func TestForwarderForwardsItsTypes(t *testing.T) {
	h := newHarness(t, newForwarder(t, consumer.Forwarder{Types: []string{"order.*"}}),
		func(s *consumer.Server) { s.PublicGroups = []string{"orders"} })
	c := h.dial("")
	if got := subscribe(t, c, "orders"); got["type"] != "subscribed" {
		t.Fatalf("subscribe orders: %v", got)
	}
	if err := h.groupSend("orders", map[string]any{"type": "name.gossip", "n": 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.groupSend("orders", map[string]any{"type": "order.created", "n": 2}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"n":2,"type":"order.created"}` {
		t.Fatalf("got %s, want the order only", got)
	}
	st := h.srv.Stats().Dropped
	if st.NotForwarded != 1 || st.NoHandler != 0 {
		t.Fatalf("dropped %+v, want 1 not forwarded and none without a handler", st)
	}
}

// The zero Forwarder joins nothing and forwards every type.
func TestForwarderZeroForwardsEveryType(t *testing.T) {
	h := newHarness(t, newForwarder(t, consumer.Forwarder{}), func(s *consumer.Server) { s.PublicGroups = []string{"room"} })
	c := h.dial("groups=room")
	if err := h.groupSend("room", map[string]any{"type": "any/type.at_all"}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"type":"any/type.at_all"}` {
		t.Fatalf("got %s", got)
	}
}

// Subscribe narrows what a client may ask for; the Join groups are
// joined all the same, and public groups and tokens still decide the
// rest.
func TestForwarderSubscribeNarrows(t *testing.T) {
	h := newHarness(t, newForwarder(t, consumer.Forwarder{Join: []string{"lobby"}, Subscribe: []string{"orders.*"}}),
		func(s *consumer.Server) { s.PublicGroups = []string{"lobby", "gossip", "orders.*"} })
	c := h.dial("groups=gossip,orders.eu")
	// gossip is public but not this route's: refused by frame.
	var refused consumer.SubscriptionError
	if err := json.Unmarshal([]byte(read(t, c)), &refused); err != nil || refused.Code != "forbidden" || refused.Group != "gossip" {
		t.Fatalf("got %+v %v, want gossip refused as forbidden", refused, err)
	}
	if got := subscribe(t, c, "gossip"); got["code"] != "forbidden" {
		t.Fatalf("subscribe gossip: %v, want forbidden", got)
	}
	if got := subscribe(t, c, "orders.us"); got["type"] != "subscribed" {
		t.Fatalf("subscribe orders.us: %v", got)
	}
	for _, g := range []string{"lobby", "orders.eu", "orders.us"} {
		if err := h.groupSend(g, map[string]any{"type": "x", "g": g}); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
		if got := read(t, c); got != `{"g":"`+g+`","type":"x"}` {
			t.Fatalf("got %s from %s", got, g)
		}
	}
	// gossip keeps a history, so a send with no member is kept, not
	// refused: what tells is that it reached nobody.
	msg, err := channellayer.NewMessage(map[string]any{"type": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := h.layer.GroupSend(context.Background(), "gossip", msg); err != nil || res.Delivered {
		t.Fatalf("send to gossip: %+v %v, want it to reach nobody", res, err)
	}
}

func TestNewForwarderRefusesBadConfig(t *testing.T) {
	for _, f := range []consumer.Forwarder{
		{Join: []string{"bad name"}},
		{Join: []string{""}},
		{Subscribe: []string{"["}},
		{Types: []string{"a["}},
		{Types: []string{""}},
	} {
		if _, err := consumer.NewForwarder(f); err == nil {
			t.Errorf("%+v: accepted", f)
		}
	}
}

// An event stream of a route that joins no group at connect, in the one
// group it asked for, resumes it from the bare id it was last sent.
func TestForwarderStreamResumesItsOneGroup(t *testing.T) {
	h := historyHarnessFor(t, &consumer.Server{PublicGroups: []string{"room"}}, newForwarder(t, consumer.Forwarder{}),
		channellayer.HistoryPolicy{Pattern: "room", Size: 100})
	open := func(lastID string) *sseStream {
		t.Helper()
		// The deadline bounds every wait for an event.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/events/?groups=room", nil)
		req.Header.Set("Accept", "text/event-stream")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("event stream: %v %v", resp, err)
		}
		s := &sseStream{cancel: cancel, resp: resp, r: bufio.NewReader(resp.Body)}
		t.Cleanup(s.kill)
		return s
	}
	next := func(s *sseStream) (float64, string) {
		t.Helper()
		m, id, err := s.next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return m["n"].(float64), id
	}
	s := open("")
	if err := h.groupSend("room", map[string]any{"type": "x", "n": 1}); err != nil {
		t.Fatal(err)
	}
	n, id := next(s)
	if n != 1 || strings.Contains(id, ":") {
		t.Fatalf("got n=%v id %q, want message 1 with a bare id", n, id)
	}
	s.kill()
	waitFor(t, "the stream to end", func() bool { return h.srv.Stats().Open == 0 })
	// Nobody is in the group now: the history keeps the message.
	_ = h.groupSend("room", map[string]any{"type": "x", "n": 2})
	if n, _ := next(open(id)); n != 2 {
		t.Fatalf("resumed stream got n=%v, want the missed message 2", n)
	}
}
