package consumer

// This file is the WebSocket fast path, the one place where Herald goes
// under coder/websocket (v1.8.15): the writer sends its data frames, in
// batches, straight to the network connection under the library's Conn,
// while the library owns the read side, answers pings and performs the
// close handshake. coder/websocket's public writers (Conn.Write, Writer,
// NetConn) take a lock, copy the payload through its buffer and flush for
// every message: one system call per frame, where a batch is one
// vectored write for everything queued, payloads shared by every
// recipient of a group message included.
//
// It relies on this behaviour of the library, which
// TestLibraryControlFramesAreWholeWrites checks (run it when upgrading):
//
//   - A server's frames are not masked, so a frame is its header and the
//     payload's bytes as they are, and with compression off (or our own
//     permessage-deflate, see deflate.go) the library never needs to see
//     our messages.
//   - The library writes only control frames (pong, close) once the
//     handshake is done, through the bufio.Writer that Hijack hands it,
//     and flushes after each: with a buffer larger than any control frame
//     (controlBufferSize), each reaches wsConn.Write as one whole frame,
//     which takes the same lock as our batches, so the two never
//     interleave. A close frame is recognised there by its first byte, so
//     no data frame follows it.
//   - Accept hijacks through the ResponseWriter it is given (upgrader), and
//     reads through the *bufio.Reader returned with the connection.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

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
// answers pings and performs the close handshake (see the top of this
// file).
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

func (t wsTransport) pings() bool { return true }

func (t wsTransport) abort() { _ = t.nc.Close() }

func (t wsTransport) release(readErr error) {
	if websocket.CloseStatus(readErr) == -1 {
		t.nc.linger(lingerAfterClose) // only if we sent a close the peer did not answer
	}
	t.ws.CloseNow()
}

func (t wsTransport) peerStatus(readErr error) websocket.StatusCode {
	if errors.Is(readErr, websocket.ErrMessageTooBig) {
		// coder/websocket closes an oversized frame with 1009 itself;
		// CloseStatus would not see it, as no close frame was read.
		return StatusTooBig
	}
	return websocket.CloseStatus(readErr)
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
