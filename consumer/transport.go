package consumer

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// transport is what the writer writes to: a WebSocket or an event
// stream. The queue, limits and counters in front of it are the same.
type transport interface {
	// write sends one frame; id is its history id, or "".
	write(ctx context.Context, id string, data []byte) error
	// close ends the connection from our side with code and reason.
	close(code websocket.StatusCode, reason string) error
}

type wsTransport struct{ ws *websocket.Conn }

func (t wsTransport) write(ctx context.Context, _ string, data []byte) error {
	return t.ws.Write(ctx, websocket.MessageText, data)
}

func (t wsTransport) close(code websocket.StatusCode, reason string) error {
	// Close writes the close frame and waits for the client's answer,
	// which the reader receives; then Read fails and the reader ends the
	// connection.
	return t.ws.Close(code, reason)
}

// IsEventStream reports whether r asks for a server-sent event stream: a
// GET that accepts text/event-stream.
func IsEventStream(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, v := range r.Header.Values("Accept") {
		for t := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(t, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// sseTransport writes frames as server-sent events: each frame is one
// event whose data is the JSON object and, for a message from a group
// with history, whose id is the message's history id, so that a
// browser's EventSource resumes with Last-Event-ID by itself.
type sseTransport struct {
	mu      sync.Mutex // the writer and the keep-alive never interleave
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	done    func() // ends the connection once the close event is written
	buf     bytes.Buffer
}

// retryMillis is what the stream asks EventSource to wait before it
// reconnects.
const retryMillis = 1000

func newSSE(w http.ResponseWriter, timeout time.Duration, done func()) (*sseTransport, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events as they come
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	t := &sseTransport{w: w, rc: http.NewResponseController(w), timeout: timeout, done: done}
	return t, t.raw([]byte("retry: 1000\n: herald\n\n"))
}

func (t *sseTransport) raw(b []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = t.rc.SetWriteDeadline(time.Now().Add(t.timeout))
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	return t.rc.Flush()
}

func (t *sseTransport) write(_ context.Context, id string, data []byte) error {
	t.buf.Reset()
	if id != "" {
		t.buf.WriteString("id: ")
		t.buf.WriteString(id)
		t.buf.WriteByte('\n')
	}
	t.buf.WriteString("data: ")
	// Raw line breaks in JSON are only ever whitespace between tokens
	// (inside strings they are escaped), and would end the data line.
	for _, c := range data {
		if c == '\n' || c == '\r' {
			c = ' '
		}
		t.buf.WriteByte(c)
	}
	t.buf.WriteString("\n\n")
	return t.raw(t.buf.Bytes())
}

// ping writes a comment, which keeps proxies from timing the stream out
// and finds a vanished client by the write failing.
func (t *sseTransport) ping() error { return t.raw([]byte(": ping\n\n")) }

// CloseEvent is the data of the "close" event that ends an event stream
// closed by the server, with the code a WebSocket would have been closed
// with.
type CloseEvent struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

func (t *sseTransport) close(code websocket.StatusCode, reason string) error {
	data, _ := json.Marshal(CloseEvent{Code: int(code), Reason: reason})
	err := t.raw(append(append([]byte("event: close\ndata: "), data...), '\n', '\n'))
	t.done()
	return err
}

// originAllowed applies the WebSocket origin rule to event streams: a
// request with an Origin must come from the server's own host or match
// patterns.
func originAllowed(r *http.Request, patterns []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
			return true
		}
	}
	return false
}
