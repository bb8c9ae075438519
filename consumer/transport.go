package consumer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
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

// WebSocket opcodes (RFC 6455, section 5.2), and the header bit that
// marks a compressed message (RFC 7692).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	rsv1    = 0x40
)

// appendFrameHeader appends the header of an unmasked, final server frame
// of opcode op carrying n bytes.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, 0x80|op, byte(n))
	case n <= 0xffff:
		return append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0x80|op, 127), uint64(n))
	}
}

// refPayload is the payload size from which a vectored write sends a
// payload from the shared message rather than copying it into the batch.
const refPayload = 2048

// wsTransport writes WebSocket data frames itself, in batches, straight
// to the connection under the coder/websocket Conn, which still reads,
// answers pings and performs the close handshake.
//
// This is sound because server frames are not masked, so a frame is its
// header and the payload's bytes as they are, and because compression is
// off. coder/websocket's own frames (pongs and the close frame) reach the
// connection through wsConn.Write, one whole frame at a time, under the
// same lock as the batches, so the two never interleave.
type wsTransport struct {
	ws      *websocket.Conn
	nc      *wsConn
	deflate *deflater // the Server's, when the client negotiated permessage-deflate
}

func (t wsTransport) frame(b *batch, _, _ string, data []byte) {
	n := len(b.buf)
	if z := t.compressed(data); z != nil {
		b.buf = appendFrameHeader(b.buf, opText, len(z))
		b.buf[n] |= rsv1 // a compressed message
		data = z
	} else {
		b.buf = appendFrameHeader(b.buf, opText, len(data))
	}
	b.size += len(b.buf) - n
	if len(data) >= refPayload && t.nc.vectored {
		b.ref(data)
	} else {
		b.add(data)
	}
	b.frames++
}

func (t wsTransport) compressed(data []byte) []byte {
	if t.deflate == nil {
		return nil
	}
	return t.deflate.compress(data)
}

func (t wsTransport) keepAlive(b *batch, seq uint32) {
	b.buf = appendFrameHeader(b.buf, opPing, 4)
	b.buf = binary.BigEndian.AppendUint32(b.buf, seq)
	b.size += 6
}

func (t wsTransport) flush(b *batch) error {
	err := t.nc.send(b)
	b.reset()
	return err
}

func (t wsTransport) close(code websocket.StatusCode, reason string) error {
	// Close writes the close frame and waits for the client's answer,
	// which the reader receives; then Read fails and the reader ends the
	// connection.
	return t.ws.Close(code, reason)
}

// wsConn is the network connection under a WebSocket once the HTTP
// server has handed it over. coder/websocket reads through it, and writes
// its control frames through Write; the writer sends its batches with
// send. Every write is bounded by a deadline, so a peer that stopped
// reading is found whichever side writes.
type wsConn struct {
	net.Conn
	timeout  time.Duration
	vectored bool   // Conn writes net.Buffers with one system call
	early    []byte // bytes the client sent right after its request; read by coder/websocket's reader only

	mu        sync.Mutex // one write at a time
	closeSent bool       // a close frame went out: no data frame may follow
	deadline  time.Time  // the write deadline set on Conn
}

func (c *wsConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		if c.early = c.early[n:]; len(c.early) == 0 {
			c.early = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write writes one control frame for coder/websocket. Its buffered writer
// (see upgrader) is large enough for any control frame and is flushed
// after each, so p is always exactly one whole frame.
func (c *wsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == opClose {
		c.closeSent = true
	}
	if err := c.arm(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// arm makes sure the next write has at least the write timeout, and at
// most half as long again, before it fails. Setting a deadline costs a
// timer update, so one deadline serves every write of the next
// timeout/2. c.mu must be held.
func (c *wsConn) arm() error {
	now := time.Now()
	if c.deadline.Sub(now) >= c.timeout {
		return nil
	}
	c.deadline = now.Add(c.timeout + c.timeout/2)
	return c.Conn.SetWriteDeadline(c.deadline)
}

// send writes a batch of frames with one system call.
func (c *wsConn) send(b *batch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent {
		return net.ErrClosed
	}
	if err := c.arm(); err != nil {
		return err
	}
	if len(b.segs) == 0 {
		_, err := c.Conn.Write(b.buf)
		return err
	}
	if b.cut < len(b.buf) {
		b.segs = append(b.segs, b.buf[b.cut:])
	}
	segs := b.segs // WriteTo consumes its receiver; b.reset clears the original
	_, err := segs.WriteTo(c.Conn)
	return err
}

// lingerAfterClose is how long a connection whose peer has not answered
// our close frame is drained before it is closed (see wsConn.linger).
const lingerAfterClose = time.Second

// linger is for a connection we sent a close frame on and are ending
// before the peer answered it, typically because the peer's frame broke a
// rule while the peer was still sending it. Closing a socket with unread
// input makes the kernel answer with a reset, and a peer that gets it may
// lose the close frame and its code. So linger shuts our side for writing
// and discards what the peer still sends, until it closes too or d has
// passed.
func (c *wsConn) linger(d time.Duration) {
	c.mu.Lock()
	sent := c.closeSent
	c.mu.Unlock()
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !sent || !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	var buf [512]byte
	for {
		if _, err := c.Conn.Read(buf[:]); err != nil {
			return
		}
	}
}

// Buffer sizes of an upgraded connection. Client frames are few and small
// (a larger one is read past the buffer, straight into the message), and
// the only frames coder/websocket writes are control frames, at most 2 +
// 125 bytes unmasked.
const (
	readBufferSize    = 256
	controlBufferSize = 128
)

// upgrader is the ResponseWriter handed to websocket.Accept. Its Hijack
// puts a wsConn under the WebSocket, and replaces the HTTP server's 4 KB
// read and write buffers, which it would otherwise keep reachable for the
// life of the connection, with small ones.
type upgrader struct {
	http.ResponseWriter
	timeout time.Duration
	nc      *wsConn // set by Hijack

	// refused holds what Accept writes when it refuses the handshake,
	// which Serve replaces with a JSON refusal.
	refused *acceptRefusal
}

func (u *upgrader) WriteHeader(status int) {
	if status != http.StatusSwitchingProtocols && u.refused == nil && u.nc == nil {
		u.refused = &acceptRefusal{status: status}
		return
	}
	u.ResponseWriter.WriteHeader(status)
}

func (u *upgrader) Write(p []byte) (int, error) {
	if u.refused != nil {
		return u.refused.body.Write(p)
	}
	return u.ResponseWriter.Write(p)
}

func (u *upgrader) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func (u *upgrader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c := &wsConn{Conn: nc, timeout: u.timeout}
	_, c.vectored = nc.(*net.TCPConn)
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		c.early = bytes.Clone(p)
	}
	// The HTTP server's conn, which stays reachable until the handler
	// returns, still points at these two; after Hijack they are ours, and
	// nothing reads or writes them again.
	*brw.Reader = *bufio.NewReaderSize(eofReader{}, 16)
	*brw.Writer = *bufio.NewWriterSize(io.Discard, 16)
	u.nc = c
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, readBufferSize), bufio.NewWriterSize(c, controlBufferSize)), nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

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
