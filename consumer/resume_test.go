package consumer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// stream is one way of receiving a group's messages: a WebSocket or an
// event stream, opened from a history id.
type stream interface {
	// next returns the next frame and its event id (event streams only).
	next(ctx context.Context) (frame map[string]any, id string, err error)
	kill()
}

type wsStream struct{ c *websocket.Conn }

func (s wsStream) next(ctx context.Context) (map[string]any, string, error) {
	_, data, err := s.c.Read(ctx)
	if err != nil {
		return nil, "", err
	}
	var m map[string]any
	return m, "", json.Unmarshal(data, &m)
}

func (s wsStream) kill() { s.c.CloseNow() }

func dialWS(ctx context.Context, base, since string) (stream, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + "/notifications/"
	if since != "" {
		u += "?since=" + since
	}
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	return wsStream{c}, nil
}

type sseStream struct {
	cancel context.CancelFunc
	resp   *http.Response
	r      *bufio.Reader
}

func (s *sseStream) next(context.Context) (map[string]any, string, error) {
	var id, data, event string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if data == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				return nil, "", err
			}
			if event == "close" {
				return nil, "", fmt.Errorf("stream closed: %s", data)
			}
			return m, id, nil
		case strings.HasPrefix(line, "id: "):
			id = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		}
	}
}

func (s *sseStream) kill() {
	s.cancel()
	s.resp.Body.Close()
}

func dialSSE(ctx context.Context, base, since string) (stream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(sctx, http.MethodGet, base+"/notifications/", nil)
	req.Header.Set("Accept", "text/event-stream")
	if since != "" {
		req.Header.Set("Last-Event-ID", since)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("event stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	return &sseStream{cancel: cancel, resp: resp, r: bufio.NewReader(resp.Body)}, nil
}

// resumeRun receives total messages published to gossip while the
// connection is killed at kills random moments, reconnecting each time
// from the last history id, and returns the "n" of every message in the
// order received. publish(i) publishes message i; it is never more than
// lead messages ahead of the receiver. dial may fail while a server
// restarts: it is retried. onKill, if set, runs after each kill.
func resumeRun(t *testing.T, total, kills, lead int, dial func(ctx context.Context, since string) (stream, error),
	publish func(i int) error, onKill func(k int), debug ...func() string) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	killAt := map[int]bool{}
	for len(killAt) < kills {
		killAt[1+rand.IntN(total-2)] = true
	}
	var got []int
	var since string
	k := 0
	var s stream
	// The client is a member before the first message is published: a
	// client that joins without an id receives the live stream only.
	for s == nil {
		var err error
		if s, err = dial(ctx, ""); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("dial: %v", err)
			}
			time.Sleep(20 * time.Millisecond) // a server still starting
		}
	}
	var received, published atomic.Int64
	progress := make(chan struct{}, 1)
	pubErr := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			for int64(i)-received.Load() >= int64(lead) {
				select {
				case <-progress:
				case <-ctx.Done():
					pubErr <- ctx.Err()
					return
				}
			}
			if err := publish(i); err != nil {
				pubErr <- fmt.Errorf("publishing %d: %w", i, err)
				return
			}
			published.Store(int64(i + 1))
		}
		pubErr <- nil
	}()

	for len(got) < total {
		if s == nil {
			var err error
			s, err = dial(ctx, since)
			if err != nil {
				if ctx.Err() != nil {
					t.Fatalf("dial: %v", err)
				}
				select { // a restarting server: try again shortly
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
		}
		frame, eventID, err := s.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				for _, d := range debug {
					t.Log(d())
				}
				t.Fatalf("after %d messages (since %s, kills %d, published %d): %v", len(got), since, k, published.Load(), err)
			}
			s.kill()
			s = nil // closed under us (restart, too slow): resume
			continue
		}
		switch frame["type"] {
		case "name.gossip":
		case "resync":
			t.Fatalf("resync after %d messages (since %s)", len(got), since)
		default:
			continue
		}
		id, _ := frame["herald_id"].(string)
		if eventID != "" && eventID != id {
			t.Fatalf("event id %s, herald_id %s", eventID, id)
		}
		n, _ := frame["n"].(float64)
		got = append(got, int(n))
		since = id
		received.Store(int64(len(got)))
		select {
		case progress <- struct{}{}:
		default:
		}
		if killAt[len(got)] {
			s.kill()
			s = nil
			k++
			if onKill != nil {
				onKill(k)
			}
		}
	}
	if s != nil {
		s.kill()
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	return got
}

func checkSequence(t *testing.T, got []int, total int) {
	t.Helper()
	want := make([]int, total)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("message %d is %d, want %d (received %d in all)", i, got[i], want[i], len(got))
			}
		}
		t.Fatalf("received %d messages, want %d", len(got), total)
	}
}

func resumeHarness(t *testing.T) *harness {
	return historyHarness(t, &consumer.Server{QueueBytes: 16 << 20}, channellayer.HistoryPolicy{Pattern: "gossip", Size: 20000})
}

// historyHarness serves /notifications/ with srv over a memory layer
// whose groups keep the histories policies say.
func historyHarness(t *testing.T, srv *consumer.Server, policies ...channellayer.HistoryPolicy) *harness {
	return historyHarnessFor(t, srv, newDemo(""), policies...)
}

// historyHarnessFor is historyHarness for the consumers ctor makes.
func historyHarnessFor(t *testing.T, srv *consumer.Server, ctor consumer.Constructor, policies ...channellayer.HistoryPolicy) *harness {
	h := &harness{t: t}
	l, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{History: policies})
	if err != nil {
		t.Fatal(err)
	}
	h.layer = l
	srv.Layer = l
	if srv.PublicGroups == nil {
		srv.PublicGroups = []string{"gossip"} // the demo's default
	}
	h.srv = srv
	h.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.srv.Serve(w, r, consumer.Route{Pattern: "/notifications/", New: ctor})
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = h.srv.Shutdown(ctx)
		h.http.Close()
		_ = l.Close()
	})
	return h
}

func gossip(t testing.TB, i int) channellayer.Message {
	m, err := channellayer.NewMessage(map[string]any{"type": "name.gossip", "n": i})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestResumeLosesNothing is issue 7's promise on one instance: a client
// killed at 20 random moments of a 10,000-message stream, resuming each
// time from its last id, receives exactly the published sequence.
func TestResumeLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		dial func(ctx context.Context, base, since string) (stream, error)
	}{{"WebSocket", dialWS}, {"EventStream", dialSSE}} {
		t.Run(tc.name, func(t *testing.T) {
			h := resumeHarness(t)
			publish := func(i int) error {
				_, err := h.layer.GroupSend(context.Background(), "gossip", gossip(t, i))
				if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
					return err
				}
				return nil
			}
			got := resumeRun(t, 10000, 20, 300, func(ctx context.Context, since string) (stream, error) {
				return tc.dial(ctx, h.http.URL, since)
			}, publish, nil, func() string { return fmt.Sprintf("%+v %+v", h.srv.Stats(), h.layer.Stats().Local) })
			checkSequence(t, got, 10000)
		})
	}
}

// A resync from the layer names its group, whether it came through the
// group (the consumer knows the group) or to the channel alone (its data
// names it).
func TestResyncNamesItsGroup(t *testing.T) {
	h := resumeHarness(t)
	h.srv.PublicGroups = []string{"gossip", "room"}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c := subscribedToRoom(t, ctx, h)
	resync, _ := channellayer.NewMessage(map[string]any{"type": channellayer.ResyncType})
	if _, err := h.layer.GroupSend(ctx, "room", resync); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != `{"type":"resync","group":"room"}` {
		t.Fatalf("resync through the group: %s %v", p, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"whoami"}`)); err != nil {
		t.Fatal(err)
	}
	_, p, err := c.Read(ctx)
	var who consumer.WhoAmI
	if err != nil || json.Unmarshal(p, &who) != nil {
		t.Fatalf("whoami: %s %v", p, err)
	}
	named, _ := channellayer.NewMessage(map[string]any{"type": channellayer.ResyncType, "group": "gossip"})
	if err := h.layer.Send(ctx, who.Channel, named); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != `{"type":"resync","group":"gossip"}` {
		t.Fatalf("resync to the channel: %s %v", p, err)
	}
}

// A resync from the layer reaches the client where the layer put it:
// before the messages that follow it, which recovery hands over right
// after it, whether or not the writer takes them in the same batch.
func TestResyncKeepsItsPlace(t *testing.T) {
	h := resumeHarness(t)
	h.srv.PublicGroups = []string{"room"}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c := subscribedToRoom(t, ctx, h)
	const n = 200
	resync, _ := channellayer.NewMessage(map[string]any{"type": channellayer.ResyncType})
	for i := range n {
		msg, _ := channellayer.NewMessage(map[string]any{"type": demoType, "n": i})
		if _, err := h.layer.GroupSend(ctx, "room", msg); err != nil {
			t.Fatal(err)
		}
		if _, err := h.layer.GroupSend(ctx, "room", resync); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 * n {
		_, p, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`"n":%d`, i/2)
		if i%2 == 1 {
			want = `{"type":"resync","group":"room"}`
		}
		if !strings.Contains(string(p), want) {
			t.Fatalf("frame %d is %s, want %s", i, p, want)
		}
	}
}

// subscribedToRoom dials h and subscribes to "room".
func subscribedToRoom(t *testing.T, ctx context.Context, h *harness) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/notifications/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","group":"room"}`)); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != `{"type":"subscribed","group":"room"}` {
		t.Fatalf("subscribe: %s %v", p, err)
	}
	return c
}
