package consumer

import (
	"encoding/json"
	"net"
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
//
// The writer encodes what it takes from the queue into a batch and sends
// the batch with flush when the queue is empty (or the batch is large):
// one write and one deadline for everything that was waiting, however
// many frames that is.
type transport interface {
	// frame adds one frame to b; id is its history id, or "", and group
	// the group of that history, if known.
	frame(b *batch, group, id string, data []byte)
	// keepAlive adds to b what checks on a quiet client: a WebSocket ping
	// whose payload is seq, or an event stream's comment.
	keepAlive(b *batch, seq uint32)
	// flush sends b, bounded by the write timeout, and empties it.
	flush(b *batch) error
	// close ends the connection from our side with code and reason.
	close(code websocket.StatusCode, reason string) error
	// pings reports whether keepAlive asks for an answer, which the
	// client must give within PingTimeout.
	pings() bool
	// abort drops the connection at once, without a close frame, so that
	// its reader ends. It does not block, and may be called at any time,
	// from any goroutine.
	abort()
	// release lets go of the connection once its reader has returned
	// readErr.
	release(readErr error)
	// peerStatus is the status of a connection the client ended, by the
	// error its reader returned.
	peerStatus(readErr error) websocket.StatusCode
}

// maxBatch is the size past which the writer sends a batch before the
// queue is empty, so that a burst of large frames is not all held in
// memory at once.
const maxBatch = 64 << 10

// batch is the bytes a writer has ready to send with one write. Small
// payloads are copied in after their frame headers; a large one is sent
// from the caller's slice (shared by every recipient of a group message)
// as its own segment of a vectored write.
type batch struct {
	buf    []byte      // encoded frames, except the payloads in segs
	segs   net.Buffers // when not nil: pieces of buf and large payloads, in order
	cut    int         // buf[cut:] is not in segs yet
	size   int         // bytes in the batch
	frames int64       // data frames in the batch, for the stats
}

var batchPool = sync.Pool{New: func() any { return &batch{buf: make([]byte, 0, 4096)} }}

func getBatch() *batch { return batchPool.Get().(*batch) }

func putBatch(b *batch) {
	if cap(b.buf) > 4*maxBatch {
		return // a huge frame grew it; let it go
	}
	b.reset()
	batchPool.Put(b)
}

func (b *batch) empty() bool { return b.size == 0 }

func (b *batch) reset() {
	clear(b.segs) // drop the references to shared payloads
	b.buf, b.segs, b.cut, b.size, b.frames = b.buf[:0], b.segs[:0], 0, 0, 0
}

func (b *batch) add(p []byte) {
	b.buf = append(b.buf, p...)
	b.size += len(p)
}

// ref adds p by reference. p must stay unchanged until the batch is sent.
func (b *batch) ref(p []byte) {
	b.segs = append(b.segs, b.buf[b.cut:], p)
	b.cut = len(b.buf)
	b.size += len(p)
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
// with history, whose id says where the client is, so that a browser's
// EventSource resumes with Last-Event-ID by itself: the message's history
// id while the stream has seen one group's (its default group's, if it
// has one), else the position of every group it has seen, as
// group:id,group:id (see parsePositions). A batch of events is one write
// and one flush.
type sseTransport struct {
	mu      sync.Mutex // one write at a time
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	done    func() // ends the connection once the close event is written

	// The position vector, kept by the writer alone: where the client is
	// in each group, starting with where it resumed from. def is the group
	// a bare id stands for ("": any, for consumers that name none).
	def string
	pos []position
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

func (t *sseTransport) frame(b *batch, group, id string, data []byte) {
	n := len(b.buf)
	if id != "" {
		b.buf = append(b.buf, "id: "...)
		b.buf = t.appendID(b.buf, group, id)
		b.buf = append(b.buf, '\n')
	}
	b.buf = append(b.buf, "data: "...)
	// Raw line breaks in JSON are only ever whitespace between tokens
	// (inside strings they are escaped), and would end the data line.
	start := len(b.buf)
	b.buf = append(b.buf, data...)
	for i, c := range b.buf[start:] {
		if c == '\n' || c == '\r' {
			b.buf[start+i] = ' '
		}
	}
	b.buf = append(b.buf, "\n\n"...)
	b.size += len(b.buf) - n
	b.frames++
}

// appendID records that the client has id of group and appends the
// event id that resumes every group of the stream.
func (t *sseTransport) appendID(b []byte, group, id string) []byte {
	if group == "" {
		return append(b, id...)
	}
	seen := false
	for i := range t.pos {
		if t.pos[i].group == group {
			t.pos[i].id, seen = id, true
			break
		}
	}
	if !seen {
		t.pos = append(t.pos, position{group: group, id: id})
	}
	if len(t.pos) == 1 && (t.def == "" || t.pos[0].group == t.def) {
		return append(b, id...)
	}
	return appendPositions(b, t.pos)
}

func (t *sseTransport) keepAlive(b *batch, _ uint32) {
	// A comment keeps proxies from timing the stream out, and finds a
	// vanished client by the write failing.
	b.add([]byte(": ping\n\n"))
}

func (t *sseTransport) pings() bool { return false }

// abort does nothing: cancelling the connection's context, which Conn
// does, ends the stream's handler.
func (t *sseTransport) abort() {}

func (t *sseTransport) release(error) {}

func (t *sseTransport) peerStatus(error) websocket.StatusCode {
	return websocket.StatusGoingAway // the client left
}

func (t *sseTransport) flush(b *batch) error {
	err := t.raw(b.buf)
	b.reset()
	return err
}

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

// OriginAllowed reports whether r may act for the page that sent it, by
// the rule WebSocket upgrades follow (Accept with OriginPatterns): a
// request without an Origin header is not from a cross-site page and is
// allowed; one with an Origin must come from the server's own host (the
// request's Host, which a router that restricts Hosts has checked first)
// or match one of patterns (path.Match, case-insensitive, against the
// origin's host, or its scheme://host when the pattern has "://"). An
// Origin with no host, such as "null", is refused. The router applies it
// to every state-changing HTTP request too.
func OriginAllowed(r *http.Request, patterns []string) bool {
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
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}
