package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// postFrom POSTs body to path as the client at addr (X-Forwarded-For,
// believed from the trusted loopback proxy), and returns the status, the
// Retry-After header and the body.
func postFrom(t *testing.T, in *instance, path, from, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+in.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestPostFloodIs429: one client that floods POST /posts or /api/ is
// answered 429 with Retry-After once its burst is spent, and counted in
// the metrics, while another client is still served; a forwarded entry
// written as ip:port is that client, not the proxy.
func TestPostFloodIs429(t *testing.T) {
	t.Parallel()
	in := startHerald(t, "HERALD_HTTP_RATE_LIMIT=2", "HERALD_HTTP_RATE_BURST=10",
		"HERALD_TRUSTED_PROXIES=127.0.0.1/32")
	post := `{"author":"flood","message":"hello"}`
	for _, tc := range []struct {
		path, body, flood, other string
	}{
		{"/posts", post, "203.0.113.1", "203.0.113.2"},
		// A proxy that writes ip:port: each port-suffixed entry is its
		// client's address, so the flood stays in its own bucket.
		{"/posts", post, "203.0.113.3:4711", "203.0.113.4:4711"},
		{"/api/groups/gossip/send", `{"type":"name.gossip","n":1}`, "[2001:db8:1:2::1]:80", "2001:db8:1:3::1"},
	} {
		var created, limited int
		var retryAfter, limitedBody string
		for i := 0; i < 40; i++ {
			from := tc.flood
			if i%2 == 1 && strings.HasPrefix(tc.flood, "[2001") {
				from = "2001:db8:1:2::ffff" // same /64: same client
			}
			status, ra, body := postFrom(t, in, tc.path, from, tc.body)
			switch status {
			case http.StatusCreated, http.StatusAccepted:
				created++
			case http.StatusTooManyRequests:
				limited++
				retryAfter, limitedBody = ra, body
			default:
				t.Fatalf("%s from %s: %d %s", tc.path, from, status, body)
			}
		}
		// 10 at once, and a few more at 2 a second while the flood runs.
		if created < 10 || created > 20 || limited < 20 {
			t.Errorf("%s flood from %s: %d served, %d refused; want the burst (10) and little more served", tc.path, tc.flood, created, limited)
		}
		if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 {
			t.Errorf("%s: Retry-After %q, want whole seconds of at least 1", tc.path, retryAfter)
		}
		var eb struct{ Error, Code string }
		if err := json.Unmarshal([]byte(limitedBody), &eb); err != nil || eb.Code != "rate_limited" || eb.Error == "" {
			t.Errorf("%s: 429 body %q, want JSON with code rate_limited", tc.path, limitedBody)
		}
		if status, _, body := postFrom(t, in, tc.path, tc.other, tc.body); status != http.StatusCreated && status != http.StatusAccepted {
			t.Errorf("%s from another client %s during the flood: %d %s", tc.path, tc.other, status, body)
		}
	}
	resp, err := http.Get("http://" + in.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(m), `herald_http_requests_refused_total{reason="rate_limited"} `) ||
		strings.Contains(string(m), `herald_http_requests_refused_total{reason="rate_limited"} 0`) {
		t.Errorf("metrics do not count the refused requests:\n%s", grepLines(string(m), "refused"))
	}
}

func grepLines(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// replayQueueBytes is the queue bound of the replay flood tests; a
// replay may send half of it.
const replayQueueBytes = 1 << 20

// fillHistory sends n messages of about size bytes to group through the
// API and returns their history ids, oldest first.
func fillHistory(t *testing.T, addr, group string, n, size int) []string {
	t.Helper()
	// A member that reads the ids as they are published.
	ctx, cancel := context.WithTimeout(context.Background(), 6*wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/notifications/?groups="+group, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ids := make(chan []string, 1)
	go func() {
		var got []string
		for len(got) < n {
			_, data, err := c.Read(ctx)
			if err != nil {
				break
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			if m["herald_group"] == group {
				got = append(got, m["herald_id"].(string))
			}
		}
		ids <- got
	}()
	pad := strings.Repeat("x", size)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"type":"name.gossip","fill":%d,"pad":"%s"}`, i, pad)
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/groups/"+group+"/send", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("fill %d: %d", i, resp.StatusCode)
		}
	}
	got := <-ids
	if len(got) != n {
		t.Fatalf("the filling member saw %d of %d messages", len(got), n)
	}
	return got
}

// replayReport is what a resuming client received.
type replayReport struct {
	frames, bytes int // replayed history frames, and their bytes
	resync        bool
	whoami        bool
	errors        []map[string]any
}

// reader reads a connection's frames on a goroutine of its own: a
// WebSocket whose read context ends is closed, so a test cannot just
// stop reading for a while.
type reader struct {
	frames chan []byte
	err    error // set before frames is closed
}

func readAll(ctx context.Context, c *websocket.Conn) *reader {
	r := &reader{frames: make(chan []byte, 4096)}
	go func() {
		defer close(r.frames)
		for {
			_, data, err := c.Read(ctx)
			if err != nil {
				r.err = err
				return
			}
			r.frames <- data
		}
	}()
	return r
}

// replay reads what arrives for d, counting what came from group's
// history (frames with "fill"), resyncs and error frames. It fails if the
// connection ends.
func (rd *reader) replay(group string, d time.Duration) (replayReport, error) {
	var r replayReport
	timeout := time.After(d)
	for {
		select {
		case <-timeout:
			return r, nil
		case data, ok := <-rd.frames:
			if !ok {
				return r, fmt.Errorf("connection ended: %v", rd.err)
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			switch {
			case m["type"] == "resync" && m["group"] == group:
				r.resync = true
			case m["type"] == "error":
				r.errors = append(r.errors, m)
			case m["type"] == "whoami":
				r.whoami = true
			case m["fill"] != nil:
				r.frames++
				r.bytes += len(data)
			}
		}
	}
}

// TestReplayFlood: a client that resumes from the start of a full
// history of 20 MB gets a resync instead of the replay and is not cut; a
// resume that fits is replayed; resume requests beyond the replay rate
// get an error frame, and connects that resume get 429; other listeners
// receive every live message meanwhile.
func TestReplayFlood(t *testing.T) {
	t.Parallel()
	in := startHerald(t, "HERALD_HISTORY=gossip:1000:1h",
		"HERALD_QUEUE_BYTES="+strconv.Itoa(replayQueueBytes),
		"HERALD_REPLAY_RATE=0.05", "HERALD_REPLAY_BURST=4",
		"HERALD_TRUSTED_PROXIES=127.0.0.1/32", "HERALD_MAX_FRAME=65536")
	ids := fillHistory(t, in.addr, "gossip", 1000, 20000) // 20 MB

	ctx, cancel := context.WithTimeout(context.Background(), 6*wait)
	defer cancel()
	dial := func(from, query string) (*websocket.Conn, *http.Response, error) {
		h := http.Header{}
		if from != "" {
			h.Set("X-Forwarded-For", from)
		}
		c, resp, err := websocket.Dial(ctx, "ws://"+in.addr+"/notifications/"+query, &websocket.DialOptions{HTTPHeader: h})
		if c != nil {
			c.SetReadLimit(1 << 20)
			t.Cleanup(func() { c.CloseNow() })
		}
		return c, resp, err
	}

	// Listeners that must get every live message.
	const listeners, live = 5, 50
	var wg sync.WaitGroup
	lerr := make(chan error, listeners)
	for i := 0; i < listeners; i++ {
		c, _, err := dial("", "")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < live; n++ {
				_, data, err := c.Read(ctx)
				if err != nil {
					lerr <- fmt.Errorf("listener lost its connection at live message %d: %v", n, err)
					return
				}
				var m struct{ Live *int }
				if err := json.Unmarshal(data, &m); err != nil || m.Live == nil || *m.Live != n {
					lerr <- fmt.Errorf("listener got %.80s, want live=%d", data, n)
					return
				}
			}
		}()
	}
	// The flood: resume from the start, 1000 frames of 20 KB.
	const attacker = "198.51.100.7"
	c, _, err := dial(attacker, "?since=0-0")
	if err != nil {
		t.Fatal(err)
	}
	// Its replay was read at connect: the live messages, which enter the
	// history too, start now and run through the rest of the flood.
	publishing := make(chan struct{})
	go func() {
		defer close(publishing)
		for n := 0; n < live; n++ {
			body := fmt.Sprintf(`{"type":"name.gossip","live":%d}`, n)
			req, _ := http.NewRequest(http.MethodPost, "http://"+in.addr+"/api/groups/gossip/send", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	rc := readAll(ctx, c)
	r, err := rc.replay("gossip", 1500*time.Millisecond)
	if err != nil {
		t.Fatalf("the resuming client was cut: %v", err)
	}
	if r.bytes > replayQueueBytes/2 || r.frames > 1000 {
		t.Errorf("a resume from 0-0 replayed %d frames, %d bytes: more than half the queue (%d)", r.frames, r.bytes, replayQueueBytes/2)
	}
	if !r.resync {
		t.Errorf("a resume past the replay bound got no resync (%d frames replayed)", r.frames)
	}

	// A resume that fits is replayed in full.
	c2, _, err := dial(attacker, "?since="+ids[989])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := readAll(ctx, c2).replay("gossip", time.Second); err != nil || r.frames != 10 || r.resync {
		t.Errorf("resume of the last 10: %+v %v, want 10 frames and no resync", r, err)
	}

	// The resume frame, repeated: two more replays fit the burst of 4,
	// then error frames.
	for i := 0; i < 6; i++ {
		f := fmt.Sprintf(`{"type":"resume","group":"gossip","since":%q}`, ids[995])
		if err := c.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	r, err = rc.replay("gossip", 1500*time.Millisecond)
	if err != nil {
		t.Fatalf("the resuming client was cut: %v", err)
	}
	limited := 0
	for _, e := range r.errors {
		if e["code"] == "replay_rate_limited" && e["group"] == "gossip" {
			if ra, ok := e["retry_after"].(float64); !ok || ra < 1 {
				t.Errorf("error frame %v: want retry_after in whole seconds", e)
			}
			limited++
		}
	}
	if limited != 4 {
		t.Errorf("6 resume frames past 2 replays: %d replay_rate_limited error frames (%v), want 4", limited, r.errors)
	}
	if r.frames > 2*4 {
		t.Errorf("6 resume frames replayed %d frames, want at most 2 replays of 4", r.frames)
	}

	// Connecting with a position, over the rate: 429 before the upgrade,
	// for a WebSocket and an event stream alike; another address is
	// served.
	if _, resp, err := dial(attacker, "?since="+ids[999]); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("WebSocket resume over the rate: %v %v, want 429 with Retry-After", err, resp)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.addr+"/notifications/", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Last-Event-ID", ids[999])
	req.Header.Set("X-Forwarded-For", attacker)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("event stream resume over the rate: %v %v, want 429 with Retry-After", err, resp)
	} else {
		resp.Body.Close()
	}
	if _, _, err := dial("198.51.100.8", "?since="+ids[999]); err != nil {
		t.Errorf("another address resuming: %v", err)
	}
	// The flooding client is still connected and served.
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"whoami"}`)); err != nil {
		t.Fatal(err)
	}
	if r, err := rc.replay("gossip", time.Second); err != nil || !r.whoami {
		t.Errorf("the resuming client after the flood: %v, whoami answered %v", err, r.whoami)
	}

	<-publishing
	wg.Wait()
	close(lerr)
	for err := range lerr {
		t.Error(err)
	}
	resp, err := http.Get("http://" + in.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`herald_replays_refused_total{reason="rate_limited"} 6`, `herald_replays_refused_total{reason="too_large"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(m), "replays"))
		}
	}
}
