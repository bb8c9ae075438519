package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

// harness runs a consumer.Server over a memory layer behind httptest.
type harness struct {
	t     *testing.T
	layer *channellayer.Memory
	srv   *consumer.Server
	http  *httptest.Server
}

func newHarness(t *testing.T, newConsumer consumer.Constructor, tweak ...func(*consumer.Server)) *harness {
	t.Helper()
	h := &harness{t: t, layer: channellayer.NewMemory()}
	h.srv = &consumer.Server{Layer: h.layer, PublicGroups: []string{"gossip"}} // the demo's default
	for _, f := range tweak {
		f(h.srv)
	}
	h.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.srv.Serve(w, r, consumer.Route{Pattern: "/", Params: map[string]string{"room": r.URL.Query().Get("room")}, New: newConsumer})
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = h.srv.Shutdown(ctx)
		h.http.Close()
		_ = h.layer.Close()
	})
	return h
}

func (h *harness) dial(query string) *websocket.Conn {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/?"+query, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	h.t.Cleanup(func() { c.CloseNow() })
	return c
}

func (h *harness) groupSend(group string, v any) error {
	msg, err := channellayer.NewMessage(v)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = h.layer.GroupSend(context.Background(), group, msg)
	return err
}

// waitFor polls cond until it holds; conditions here are counters that
// change once an event has happened.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(data)
}

// readUntilClosed reads until the connection ends and returns its close
// code.
func readUntilClosed(t *testing.T, c *websocket.Conn) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func write(t *testing.T, c *websocket.Conn, kind websocket.MessageType, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Write(ctx, kind, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// recorder is a consumer that records its lifecycle.
type recorder struct {
	consumer.JSON
	mu          sync.Mutex
	channel     string
	params      string
	disconnects int
	status      websocket.StatusCode
	done        chan struct{}
	received    chan map[string]json.RawMessage
}

func newRecorder() *recorder {
	r := &recorder{done: make(chan struct{}), received: make(chan map[string]json.RawMessage, 16)}
	r.OnConnect = func(ctx context.Context, c *consumer.Conn) error {
		r.mu.Lock()
		r.channel, r.params = c.Channel(), c.Param("room")
		r.mu.Unlock()
		return c.Layer().GroupAdd(ctx, "room", c.Channel())
	}
	r.OnReceive = func(_ context.Context, _ *consumer.Conn, obj map[string]json.RawMessage) error {
		r.received <- obj
		return nil
	}
	r.OnDisconnect = func(_ *consumer.Conn, status websocket.StatusCode) {
		r.mu.Lock()
		r.disconnects++
		r.status = status
		r.mu.Unlock()
		close(r.done) // a second call panics: exactly once
	}
	routes := &consumer.Routes{}
	routes.HandleFunc("chat.message", consumer.ForwardToClient)
	r.Routes = routes
	return r
}

func (r *recorder) waitDisconnect(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(wait):
		t.Fatal("Disconnect was not called")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

func (r *recorder) channelName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.channel
}

func single(r *recorder) consumer.Constructor {
	return func(*http.Request) consumer.Consumer { return r }
}

func TestSendToOneChannel(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec))
	c := h.dial("room=lobby")
	waitFor(t, "connect", func() bool { return rec.channelName() != "" })
	if rec.params != "lobby" {
		t.Errorf("path parameter room = %q, want lobby", rec.params)
	}
	msg, _ := channellayer.NewMessage(map[string]any{"type": "chat.message", "text": "just you"})
	if err := h.layer.Send(context.Background(), rec.channelName(), msg); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"text":"just you","type":"chat.message"}` {
		t.Fatalf("got %s", got)
	}
	c.Close(websocket.StatusNormalClosure, "bye")
	if st := rec.waitDisconnect(t); st != websocket.StatusNormalClosure {
		t.Errorf("disconnect status %d, want 1000", st)
	}
	// The channel goes with the connection: it is closed right after
	// Disconnect returns.
	waitFor(t, "the channel to close", func() bool {
		return errors.Is(h.layer.Send(context.Background(), rec.channelName(), msg), channellayer.ErrNoReceivers)
	})
}

func TestNotificationForwardsUnchanged(t *testing.T) {
	h := newHarness(t, newDemo(""))
	a, b := h.dial(""), h.dial("")
	// A connection counts as open once accepted, and it joined its group
	// before that.
	waitFor(t, "both joined", func() bool { return h.srv.Stats().Open == 2 })
	if _, err := h.layer.GroupSend(context.Background(), "gossip", mustMsg(t, `{"type":"warmup"}`)); err != nil {
		t.Fatal(err)
	}
	event := `{"type":"name.gossip","event":"New Post","sender":"ana","message":"héllo <b>","id":42,"extra":{"nested":[1,2]}}`
	if _, err := h.layer.GroupSend(context.Background(), "gossip", mustMsg(t, event)); err != nil {
		t.Fatal(err)
	}
	// The event byte for byte, then the history id as one more field.
	for _, c := range []*websocket.Conn{a, b} {
		got := read(t, c)
		id, ok := strings.CutPrefix(got, event[:len(event)-1]+`,"herald_id":"`)
		if !ok || !strings.HasSuffix(id, `","herald_group":"gossip"}`) {
			t.Fatalf("got %s, want the event byte for byte with a herald_id and herald_group: %s", got, event)
		}
		if _, err := channellayer.ParseID(strings.TrimSuffix(id, `","herald_group":"gossip"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// The route does not forward warmup: dropped and counted, connections
	// still open.
	waitFor(t, "not forwarded counted", func() bool { return h.srv.Stats().Dropped.NotForwarded >= 2 })
	a.Close(websocket.StatusNormalClosure, "")
	b.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "connections closed", func() bool { return h.srv.Stats().Open == 0 })
	// gossip keeps history: the send is kept, and delivered to nobody.
	if r, err := h.layer.GroupSend(context.Background(), "gossip", mustMsg(t, event)); err != nil || r.Delivered {
		t.Fatalf("group still has members after disconnect: %+v, %v", r, err)
	}
}

func mustMsg(t *testing.T, s string) channellayer.Message {
	t.Helper()
	m, err := channellayer.ParseMessage([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestUnhandledTypeKeepsConnection(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec))
	c := h.dial("")
	waitFor(t, "connect", func() bool { return rec.channelName() != "" })
	if err := h.groupSend("room", map[string]any{"type": "nobody.handles.this"}); err != nil {
		t.Fatal(err)
	}
	if err := h.groupSend("room", map[string]any{"type": "chat.message", "n": 2}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"n":2,"type":"chat.message"}` {
		t.Fatalf("got %s", got)
	}
	if n := h.srv.Stats().Dropped.NoHandler; n != 1 {
		t.Fatalf("Unhandled = %d, want 1", n)
	}
}

func TestClientFrames(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec))
	c := h.dial("")
	write(t, c, websocket.MessageText, `{"type":"hello","n":1}`)
	select {
	case obj := <-rec.received:
		if string(obj["type"]) != `"hello"` {
			t.Fatalf("received %v", obj)
		}
	case <-time.After(wait):
		t.Fatal("OnReceive not called")
	}
	for _, bad := range []string{`not json`, `[1,2]`, `"str"`, `null`} {
		write(t, c, websocket.MessageText, bad)
		var frame consumer.ErrorFrame
		if err := json.Unmarshal([]byte(read(t, c)), &frame); err != nil || frame.Type != "error" || frame.Error == "" || frame.Code != "bad_request" {
			t.Fatalf("frame %q: answer %+v %v, want an error frame with code bad_request", bad, frame, err)
		}
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	cases := []struct {
		name string
		kind websocket.MessageType
		data string
		want websocket.StatusCode
	}{
		{"binary", websocket.MessageBinary, "\x00\x01", consumer.StatusUnsupportedData},
		{"invalid UTF-8", websocket.MessageText, "{\"type\":\"\xff\"}", consumer.StatusInvalidPayload},
		{"too big", websocket.MessageText, `{"type":"x","pad":"` + strings.Repeat("a", 70<<10) + `"}`, consumer.StatusTooBig},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			h := newHarness(t, single(rec))
			c := h.dial("")
			write(t, c, tc.kind, tc.data)
			if got := readUntilClosed(t, c); got != tc.want {
				t.Errorf("client saw close %d, want %d", got, tc.want)
			}
			if got := rec.waitDisconnect(t); got != tc.want {
				t.Errorf("Disconnect status %d, want %d", got, tc.want)
			}
		})
	}
}

func TestConnectOutcomes(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		var disconnects atomic.Int32
		j := &consumer.JSON{
			OnConnect:    func(context.Context, *consumer.Conn) error { return consumer.Reject(http.StatusForbidden, "go away") },
			OnDisconnect: func(*consumer.Conn, websocket.StatusCode) { disconnects.Add(1) },
		}
		h := newHarness(t, func(*http.Request) consumer.Consumer { return j })
		_, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(h.http.URL, "http"), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("dial: %v %v, want 403", err, resp)
		}
		waitFor(t, "disconnect", func() bool { return disconnects.Load() == 1 })
	})
	t.Run("close code", func(t *testing.T) {
		j := &consumer.JSON{OnConnect: func(context.Context, *consumer.Conn) error {
			return consumer.CloseWith(4001, "not today")
		}}
		h := newHarness(t, func(*http.Request) consumer.Consumer { return j })
		if got := readUntilClosed(t, h.dial("")); got != 4001 {
			t.Fatalf("close %d, want 4001", got)
		}
	})
}

func TestSlowClientIsCutOffAlone(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, func(*http.Request) consumer.Consumer { return rec }, func(s *consumer.Server) { s.QueueBytes = 8 << 16 })
	slow := h.dial("") // never reads until cut off
	waitFor(t, "slow joined", func() bool { return rec.channelName() != "" })

	fastRec := newRecorder()
	fast := newHarnessConn(t, h, fastRec)

	// 64 KiB frames fill the socket buffers of a client that does not
	// read, then the queue.
	pad := strings.Repeat("x", 64<<10)
	const n = 400
	// Each message waits until the fast client has read the one before, so
	// only the slow client falls behind.
	for i := 0; i < n && h.srv.Stats().SlowDisconnects == 0; i++ {
		if err := h.groupSend("room", map[string]any{"type": "chat.message", "pad": pad, "i": i}); err != nil {
			t.Fatal(err)
		}
		var got struct{ I int }
		if err := json.Unmarshal([]byte(read(t, fast)), &got); err != nil || got.I != i {
			t.Fatalf("fast client got message %d (%v), want %d", got.I, err, i)
		}
	}
	if h.srv.Stats().SlowDisconnects != 1 {
		t.Fatalf("SlowDisconnects = %d after %d messages, want 1", h.srv.Stats().SlowDisconnects, n)
	}
	// The fast client still receives after the slow one was cut off.
	if err := h.groupSend("room", map[string]any{"type": "chat.message", "i": -1}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, fast); got != `{"i":-1,"type":"chat.message"}` {
		t.Fatalf("fast client after cut-off: %s", got)
	}
	if got := readUntilClosed(t, slow); got != consumer.StatusTooSlow {
		t.Errorf("slow client saw close %d, want %d", got, consumer.StatusTooSlow)
	}
	if st := rec.waitDisconnect(t); st != consumer.StatusTooSlow {
		t.Errorf("Disconnect status %d, want %d", st, consumer.StatusTooSlow)
	}
}

// newHarnessConn connects a second client served by its own consumer.
func newHarnessConn(t *testing.T, h *harness, rec *recorder) *websocket.Conn {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.srv.Serve(w, r, consumer.Route{Pattern: "/second", New: single(rec)})
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { c.CloseNow() })
	waitFor(t, "second client joined", func() bool { return rec.channelName() != "" })
	return c
}

func TestShutdownSendsServiceRestart(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec))
	c := h.dial("")
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()
	if got := readUntilClosed(t, c); got != consumer.StatusServiceRestart {
		t.Fatalf("close %d, want 1012", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := rec.waitDisconnect(t); st != consumer.StatusServiceRestart {
		t.Errorf("Disconnect status %d", st)
	}
	// New connections are refused while draining.
	_, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(h.http.URL, "http"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial during shutdown: %v, want 503", err)
	}
}

func TestNotificationClientFrames(t *testing.T) {
	h := newHarness(t, newDemo(""))
	c := h.dial("")
	write(t, c, websocket.MessageText, `{"type":"whoami"}`)
	var who consumer.WhoAmI
	if err := json.Unmarshal([]byte(read(t, c)), &who); err != nil || who.Type != "whoami" || who.Channel == "" {
		t.Fatalf("whoami answer %+v %v", who, err)
	}
	// The name it reports reaches this connection.
	msg := mustMsg(t, `{"type":"name.gossip","only":"you"}`)
	if err := h.layer.Send(context.Background(), who.Channel, msg); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"type":"name.gossip","only":"you"}` {
		t.Fatalf("got %s", got)
	}
	for _, bad := range []string{`{"type":"dance"}`, `{"type":7}`, `{"no":"type"}`} {
		write(t, c, websocket.MessageText, bad)
		var frame consumer.ErrorFrame
		if err := json.Unmarshal([]byte(read(t, c)), &frame); err != nil || frame.Type != "error" || frame.Code != "bad_request" {
			t.Fatalf("%s: got %+v %v, want an error frame with code bad_request", bad, frame, err)
		}
	}
}
