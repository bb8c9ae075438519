package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// groupsHarness serves /notifications/ over a memory layer where gossip,
// a and b keep a history and any client may join them; "secret" it may
// not.
func groupsHarness(t *testing.T) *harness {
	return historyHarness(t, &consumer.Server{PublicGroups: []string{"gossip", "a", "b"}},
		channellayer.HistoryPolicy{Pattern: "gossip", Size: 1000},
		channellayer.HistoryPolicy{Pattern: "a", Size: 1000},
		channellayer.HistoryPolicy{Pattern: "b", Size: 1000})
}

// publishTo sends message {"type":"name.gossip","g":group,"n":n} to
// group, kept in its history.
func (h *harness) publishTo(group string, n int) {
	h.t.Helper()
	m, err := channellayer.NewMessage(map[string]any{"type": "name.gossip", "g": group, "n": n})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.layer.GroupSend(context.Background(), group, m); err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
		h.t.Fatal(err)
	}
}

// historyIDs returns the history ids of group's messages, oldest first.
func (h *harness) historyIDs(group string) []string {
	h.t.Helper()
	msgs, err := h.layer.History(context.Background(), group, "0-0", 1000)
	if err != nil {
		h.t.Fatal(err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID()
	}
	return ids
}

type gframe struct {
	Type  string `json:"type"`
	G     string `json:"g"`
	N     int    `json:"n"`
	Group string `json:"group"`
	ID    string `json:"herald_id"`
}

func readFrame(t *testing.T, c *websocket.Conn) gframe {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, p, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var f gframe
	if err := json.Unmarshal(p, &f); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return f
}

// A WebSocket client gives a position per group in "since": the default
// group and the groups of "groups" resume from theirs at connect, and a
// group it subscribes to later from its own; a group it may not join is
// answered with an error frame.
func TestSincePerGroupOverWebSocket(t *testing.T) {
	h := groupsHarness(t)
	for i := range 3 {
		for _, g := range []string{"gossip", "a", "b"} {
			h.publishTo(g, i)
		}
	}
	gossip, a, b := h.historyIDs("gossip"), h.historyIDs("a"), h.historyIDs("b")
	since := url.QueryEscape(fmt.Sprintf("%s,a:%s,b:%s", gossip[0], a[1], b[0]))
	c := h.dial("since=" + since + "&groups=a,secret")

	// At connect, in the order of joining: the default group from message
	// 1, a from message 2, and an error for secret.
	want := []gframe{
		{Type: "name.gossip", G: "gossip", N: 1}, {Type: "name.gossip", G: "gossip", N: 2},
		{Type: "name.gossip", G: "a", N: 2}, {Type: "error", Group: "secret"},
	}
	expectFrames(t, c, "at connect", want)
	// b was remembered: subscribing resumes it from message 1.
	write(t, c, websocket.MessageText, `{"type":"subscribe","group":"b"}`)
	for _, wantN := range []int{1, 2} {
		if f := readFrame(t, c); f.G != "b" || f.N != wantN || f.ID != b[wantN] {
			t.Fatalf("after subscribing to b: %+v, want b's message %d", f, wantN)
		}
	}
	if f := readFrame(t, c); f.Type != "subscribed" || f.Group != "b" {
		t.Fatalf("got %+v, want the subscription's answer", f)
	}
	// Live messages follow, once.
	h.publishTo("b", 3)
	if f := readFrame(t, c); f.G != "b" || f.N != 3 {
		t.Fatalf("live: %+v", f)
	}
}

// A resume frame may carry a position per group.
func TestResumeFramePerGroup(t *testing.T) {
	h := groupsHarness(t)
	for i := range 3 {
		h.publishTo("gossip", i)
		h.publishTo("a", i)
	}
	gossip, a := h.historyIDs("gossip"), h.historyIDs("a")
	c := h.dial("groups=a")
	write(t, c, websocket.MessageText, fmt.Sprintf(`{"type":"resume","since":"%s,a:%s,b:%s"}`, gossip[0], a[1], a[1]))
	want := []gframe{
		{Type: "name.gossip", G: "gossip", N: 1}, {Type: "name.gossip", G: "gossip", N: 2},
		{Type: "name.gossip", G: "a", N: 2}, {Type: "error", Group: "b"},
	}
	expectFrames(t, c, "after the resume frame", want)
}

// An event stream joins several groups with "groups", and its event ids
// carry the position of every group, so that Last-Event-ID resumes them
// all: nothing missed, nothing twice.
func TestEventStreamResumesEveryGroup(t *testing.T) {
	h := groupsHarness(t)
	open := func(query, lastID string) *sseStream {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/notifications/?"+query, nil)
		req.Header.Set("Accept", "text/event-stream")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		s := &sseStream{cancel: cancel, resp: resp, r: bufio.NewReader(resp.Body)}
		t.Cleanup(s.kill)
		return s
	}
	s := open("groups=a,b,secret", "")
	waitFor(t, "joined", func() bool { return h.srv.Stats().Open == 1 && h.layer.Stats().Local.Members >= 3 })
	next := map[string]int{}
	var lastID string
	readN := func(s *sseStream, n int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		for range n {
			m, id, err := s.next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			g, i := m["g"].(string), int(m["n"].(float64))
			if i != next[g] {
				t.Fatalf("group %s: message %d, want %d", g, i, next[g])
			}
			next[g]++
			lastID = id
		}
	}
	for i := range 2 {
		for _, g := range []string{"gossip", "a", "b"} {
			h.publishTo(g, i)
		}
	}
	readN(s, 6)
	if n := strings.Count(lastID, ":"); n != 3 {
		t.Fatalf("event id %q does not hold the three groups' positions", lastID)
	}
	s.kill()
	waitFor(t, "gone", func() bool { return h.srv.Stats().Open == 0 })
	for i := 2; i < 5; i++ {
		for _, g := range []string{"gossip", "a", "b"} {
			h.publishTo(g, i)
		}
	}
	s = open("groups=a,b", lastID)
	readN(s, 9)
	for _, g := range []string{"gossip", "a", "b"} {
		h.publishTo(g, 5)
	}
	readN(s, 3)
	for _, g := range []string{"gossip", "a", "b"} {
		if next[g] != 6 {
			t.Fatalf("group %s: %d messages, want 6", g, next[g])
		}
	}
}

// An event stream in its default group alone keeps the bare id.
func TestEventStreamOneGroupBareID(t *testing.T) {
	h := groupsHarness(t)
	st, err := dialSSE(context.Background(), h.http.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.kill()
	waitFor(t, "joined", func() bool { return h.layer.Stats().Local.Members == 1 })
	h.publishTo("gossip", 0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, id, err := st.next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ids := h.historyIDs("gossip"); id != ids[0] {
		t.Fatalf("event id %q, want %q", id, ids[0])
	}
}

// expectFrames reads len(want) frames from c and compares them with want,
// ignoring ids and, of error frames, everything but the group.
func expectFrames(t *testing.T, c *websocket.Conn, when string, want []gframe) {
	t.Helper()
	var got []gframe
	for range want {
		f := readFrame(t, c)
		f.ID = ""
		if f.Type == "error" {
			f = gframe{Type: "error", Group: f.Group}
		}
		got = append(got, f)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s got %v, want %v", when, got, want)
	}
}
