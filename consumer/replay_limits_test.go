package consumer_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// fill publishes n messages of about size bytes to gossip and returns
// their history ids.
func fill(t *testing.T, h *harness, n, size int) []string {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		m, _ := channellayer.NewMessage(map[string]any{"type": "name.gossip", "n": i, "pad": strings.Repeat("x", size)})
		if _, err := h.layer.GroupSend(ctx, "gossip", m); err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
			t.Fatal(err)
		}
	}
	msgs, err := h.layer.History(ctx, "gossip", "0-0", n)
	if err != nil || len(msgs) != n {
		t.Fatalf("history: %d messages, %v", len(msgs), err)
	}
	ids := make([]string, n)
	for i, m := range msgs {
		ids[i] = m.ID()
	}
	return ids
}

// readFrames reads until a whoami answer, counting replayed messages and
// resyncs.
func readFrames(t *testing.T, ctx context.Context, c *websocket.Conn) (replayed int, resync bool, errs []map[string]any) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"whoami"}`)); err != nil {
		t.Fatal(err)
	}
	s := wsStream{c}
	for {
		m, _, err := s.next(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch m["type"] {
		case "whoami":
			return
		case "resync":
			resync = true
		case "error":
			errs = append(errs, m)
		case "name.gossip":
			replayed++
		}
	}
}

func TestReplayBoundedInBytes(t *testing.T) {
	h := historyHarness(t, &consumer.Server{QueueBytes: 64 << 10, ReplayRate: -1},
		channellayer.HistoryPolicy{Pattern: "gossip", Size: 1000})
	ids := fill(t, h, 100, 1000) // about 100 KB, more than half of 64 KiB
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	s, err := dialWS(ctx, h.http.URL, "0-0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.kill()
	if n, resync, _ := readFrames(t, ctx, s.(wsStream).c); n != 0 || !resync {
		t.Fatalf("resume of 100 KB with a 32 KiB bound: %d replayed, resync %v; want a resync alone", n, resync)
	}
	if st := h.srv.Stats(); st.ReplaysRefused.TooLarge != 1 {
		t.Errorf("stats: %+v, want one too-large replay", st.ReplaysRefused)
	}
	// What fits is replayed: 20 messages of 1 KB.
	s2, err := dialWS(ctx, h.http.URL, ids[79])
	if err != nil {
		t.Fatal(err)
	}
	defer s2.kill()
	if n, resync, _ := readFrames(t, ctx, s2.(wsStream).c); n != 20 || resync {
		t.Fatalf("resume of 20 KB: %d replayed, resync %v; want 20", n, resync)
	}
	// MaxReplayBytes lowers the bound, never raises it past half the queue.
	h.srv.MaxReplayBytes = 10 << 10
	s3, err := dialWS(ctx, h.http.URL, ids[79])
	if err != nil {
		t.Fatal(err)
	}
	defer s3.kill()
	if n, resync, _ := readFrames(t, ctx, s3.(wsStream).c); n != 0 || !resync {
		t.Fatalf("resume of 20 KB with MaxReplayBytes 10 KiB: %d replayed, resync %v", n, resync)
	}
}

func TestReplayRateLimited(t *testing.T) {
	h := historyHarness(t, &consumer.Server{ReplayRate: 0.01, ReplayBurst: 3},
		channellayer.HistoryPolicy{Pattern: "gossip", Size: 1000})
	ids := fill(t, h, 10, 10)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	// A connect without a position takes nothing.
	for i := 0; i < 5; i++ {
		s, err := dialWS(ctx, h.http.URL, "")
		if err != nil {
			t.Fatal(err)
		}
		s.kill()
	}
	s, err := dialWS(ctx, h.http.URL, ids[5]) // 1 of 3
	if err != nil {
		t.Fatal(err)
	}
	defer s.kill()
	c := s.(wsStream).c
	if n, _, _ := readFrames(t, ctx, c); n != 4 {
		t.Fatalf("resume at connect: %d replayed, want 4", n)
	}
	// A resume frame takes one (2 of 3); a subscribe with since the last.
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"resume","group":"gossip","since":"`+ids[8]+`"}`))
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","group":"gossip","since":"`+ids[8]+`"}`))
	readFrames(t, ctx, c)
	// Over the limit: an error frame, nothing replayed.
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"resume","group":"gossip","since":"`+ids[5]+`"}`))
	n, _, errs := readFrames(t, ctx, c)
	if n != 0 || len(errs) != 1 || errs[0]["code"] != "replay_rate_limited" || errs[0]["group"] != "gossip" || errs[0]["retry_after"].(float64) < 1 {
		t.Fatalf("resume over the rate: %d replayed, errors %v; want one replay_rate_limited", n, errs)
	}
	// A subscribe with since over the limit: subscribed, and a resync.
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","group":"gossip","since":"`+ids[5]+`"}`))
	if n, resync, _ := readFrames(t, ctx, c); n != 0 || !resync {
		t.Fatalf("subscribe with since over the rate: %d replayed, resync %v; want a resync", n, resync)
	}
	// A connect with a position, WebSocket or event stream: 429.
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/notifications/?since="+ids[9], nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("WebSocket connect over the rate: %v %v, want 429 with Retry-After", err, resp)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/notifications/", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", ids[9])
	r2, err := http.DefaultClient.Do(req)
	if err != nil || r2.StatusCode != http.StatusTooManyRequests || r2.Header.Get("Retry-After") == "" {
		t.Fatalf("event stream connect over the rate: %v %v, want 429 with Retry-After", err, r2)
	}
	r2.Body.Close()
	if st := h.srv.Stats(); st.ReplaysRefused.RateLimited != 4 {
		t.Errorf("stats %+v, want 4 rate-limited replays", st.ReplaysRefused)
	}
}
