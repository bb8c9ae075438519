package consumer_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/consumer"
)

// frameConn is a test client that speaks WebSocket frame by frame, so
// that a test can see exactly what the server put on the wire.
type frameConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// dialFrames opens a WebSocket to the harness by hand. extra is sent in
// the same write as the upgrade request, as a client that does not wait
// for the answer would.
func (h *harness) dialFrames(extra []byte) *frameConn {
	h.t.Helper()
	c, _ := h.dialFramesWith("", extra)
	return c
}

// dialFramesWith is dialFrames with more request headers (each ending in
// CRLF); it also returns the server's answer.
func (h *harness) dialFramesWith(header string, extra []byte) (*frameConn, *http.Response) {
	h.t.Helper()
	host := strings.TrimPrefix(h.http.URL, "http://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { nc.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGVzdC1rZXktMTIzNDU2Nw==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	if _, err := nc.Write(append([]byte(req), extra...)); err != nil {
		h.t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		h.t.Fatalf("upgrade: %v %v", resp, err)
	}
	return &frameConn{t: h.t, nc: nc, br: br}, resp
}

// clientFrame encodes a masked client frame.
func clientFrame(op byte, payload []byte) []byte {
	key := [4]byte{1, 2, 3, 4}
	var f []byte
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|op, 0x80|byte(n))
	default:
		f = append(f, 0x80|op, 0x80|126, byte(n>>8), byte(n))
	}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func (c *frameConn) send(op byte, payload []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(clientFrame(op, payload)); err != nil {
		c.t.Fatal(err)
	}
}

// next reads one server frame, which must be final, unmasked and have
// no extension bits.
func (c *frameConn) next() (op byte, payload []byte, err error) {
	b0, payload, err := c.nextWithBits()
	if err == nil && b0&0x70 != 0 {
		err = fmt.Errorf("frame with RSV bits %#x", b0)
	}
	return b0 & 0x0f, payload, err
}

// nextWithBits reads one server frame, which must be final and unmasked,
// and returns its first header byte (FIN, RSV1-3, opcode) and payload.
func (c *frameConn) nextWithBits() (b0 byte, payload []byte, err error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	var hdr [8]byte
	if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
		return 0, nil, err
	}
	if hdr[0]&0x80 == 0 || hdr[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad frame header % x", hdr[:2])
	}
	b0, n := hdr[0], uint64(hdr[1]&0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(hdr[:2]))
	case 127:
		if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(hdr[:8])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(c.br, payload)
	return b0, payload, err
}

// burst is a consumer whose every client frame is answered with n
// numbered frames, queued at once, so that the writer finds them waiting
// together.
func burst(n int, size int) consumer.Constructor {
	pad := strings.Repeat("x", size)
	j := &consumer.JSON{OnReceive: func(_ context.Context, c *consumer.Conn, obj map[string]json.RawMessage) error {
		for i := range n {
			if err := c.SendJSON(map[string]any{"type": "n", "i": i, "pad": pad}); err != nil {
				return err
			}
		}
		return nil
	}}
	return func(*http.Request) consumer.Consumer { return j }
}

func frameIndex(t *testing.T, payload []byte) int {
	t.Helper()
	var m struct{ I int }
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("frame %q: %v", payload, err)
	}
	return m.I
}

// Frames that wait together go out together, and come out whole and in
// order, small and large (a large payload is sent by reference).
func TestBatchedFramesArriveWholeAndInOrder(t *testing.T) {
	for _, size := range []int{10, 5000, 70000} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			h := newHarness(t, burst(300, size), func(s *consumer.Server) { s.QueueBytes = 64 << 20 })
			c := h.dialFrames(nil)
			c.send(0x1, []byte(`{"type":"go"}`))
			for want := range 300 {
				op, p, err := c.next()
				if err != nil {
					t.Fatalf("frame %d: %v", want, err)
				}
				if op != 0x1 {
					t.Fatalf("frame %d: opcode %d", want, op)
				}
				if got := frameIndex(t, p); got != want {
					t.Fatalf("frame %d arrived as %d", got, want)
				}
			}
		})
	}
}

// Pongs the server writes while data frames stream never cut into a data
// frame, and answer each ping with its payload.
func TestControlFramesDoNotInterleave(t *testing.T) {
	h := newHarness(t, burst(2000, 300), func(s *consumer.Server) { s.QueueBytes = 8 << 20; s.RateBurst = 100 })
	c := h.dialFrames(nil)
	c.send(0x1, []byte(`{"type":"go"}`))
	pings := 0
	data, pongs := 0, 0
	for data < 2000 {
		if pings < 50 && data%20 == 0 {
			c.send(0x9, fmt.Appendf(nil, "ping-%d", pings))
			pings++
		}
		op, p, err := c.next()
		if err != nil {
			t.Fatalf("after %d data frames: %v", data, err)
		}
		switch op {
		case 0x1:
			if got := frameIndex(t, p); got != data {
				t.Fatalf("frame %d arrived as %d", data, got)
			}
			data++
		case 0xA:
			if want := fmt.Sprintf("ping-%d", pongs); string(p) != want {
				t.Fatalf("pong %q, want %q", p, want)
			}
			pongs++
		default:
			t.Fatalf("opcode %d", op)
		}
	}
	for pongs < pings {
		op, p, err := c.next()
		if err != nil || op != 0xA {
			t.Fatalf("waiting for pong %d: %d %q %v", pongs, op, p, err)
		}
		pongs++
	}
}

// After the server answers a client's close, nothing follows it, however
// much was queued.
func TestNothingAfterTheCloseFrame(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec), func(s *consumer.Server) { s.QueueBytes = 1 << 30 })
	c := h.dialFrames(nil)
	waitFor(t, "joined", func() bool { return rec.channelName() != "" })
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if h.groupSend("room", map[string]any{"type": "chat.message", "i": i}) != nil {
				return
			}
		}
	}()
	for range 100 {
		if _, _, err := c.next(); err != nil {
			t.Fatal(err)
		}
	}
	c.send(0x8, []byte{0x03, 0xe8})
	closes := 0
	for {
		op, p, err := c.next()
		if err != nil {
			if closes == 0 {
				t.Fatalf("connection ended without a close frame: %v", err)
			}
			break // the server closed the socket after the handshake
		}
		switch {
		case op == 0x8:
			closes++
			if code := binary.BigEndian.Uint16(p); code != 1000 {
				t.Fatalf("close code %d", code)
			}
		case closes > 0:
			t.Fatalf("opcode %d after the close frame", op)
		}
	}
	if closes != 1 {
		t.Fatalf("%d close frames", closes)
	}
	if st := rec.waitDisconnect(t); st != websocket.StatusNormalClosure {
		t.Errorf("Disconnect status %d", st)
	}
}

// A frame the client sends right behind its upgrade request, in the same
// packet, is read.
func TestFrameRightAfterTheRequest(t *testing.T) {
	h := newHarness(t, newDemo(""))
	c := h.dialFrames(clientFrame(0x1, []byte(`{"type":"whoami"}`)))
	op, p, err := c.next()
	if err != nil || op != 0x1 || !bytes.Contains(p, []byte(`"whoami"`)) {
		t.Fatalf("got %d %q %v, want the whoami answer", op, p, err)
	}
}

// A client that does not answer pings is dropped with StatusPingTimeout;
// one that answers stays.
func TestPingTimeout(t *testing.T) {
	fast := func(s *consumer.Server) { s.PingInterval, s.PingTimeout = 30*time.Millisecond, 30*time.Millisecond }
	t.Run("deaf", func(t *testing.T) {
		rec := newRecorder()
		h := newHarness(t, single(rec), fast)
		_ = h.dialFrames(nil) // reads nothing, answers nothing
		if st := rec.waitDisconnect(t); st != consumer.StatusPingTimeout {
			t.Fatalf("Disconnect status %d, want %d", st, consumer.StatusPingTimeout)
		}
	})
	t.Run("answering", func(t *testing.T) {
		rec := newRecorder()
		h := newHarness(t, single(rec), fast)
		c := h.dialFrames(nil)
		for pongs := 0; pongs < 10; {
			op, p, err := c.next()
			if err != nil {
				t.Fatalf("after %d pings: %v", pongs, err)
			}
			if op == 0x9 {
				c.send(0xA, p)
				pongs++
			}
		}
		select {
		case <-rec.done:
			t.Fatalf("a client that answers pings was dropped: %d", rec.status)
		default:
		}
	})
}

// A client that stops reading is dropped once a write has waited longer
// than WriteTimeout, before its queue fills.
func TestStuckClientTimesOut(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec), func(s *consumer.Server) {
		s.QueueBytes, s.WriteTimeout, s.PingInterval = 1<<30, 200*time.Millisecond, -1
	})
	_ = h.dialFrames(nil) // never reads
	waitFor(t, "joined", func() bool { return rec.channelName() != "" })
	pad := strings.Repeat("x", 64<<10)
	for range 400 { // more than the socket buffers hold
		if err := h.groupSend("room", map[string]any{"type": "chat.message", "pad": pad}); err != nil {
			break // dropped already: the group is empty
		}
	}
	st := rec.waitDisconnect(t)
	if h.srv.Stats().SlowDisconnects != 0 || st == consumer.StatusTooSlow {
		t.Fatal("closed as too slow, not by the write timeout")
	}
}

// An idle connection has no writer goroutine: it comes with something to
// write and goes when all is written.
func TestIdleConnectionHasNoWriter(t *testing.T) {
	h := newHarness(t, newDemo(""))
	var conns []*websocket.Conn
	for range 20 {
		conns = append(conns, h.dial(""))
	}
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 20 })
	if err := h.groupSend("gossip", map[string]any{"type": "name.gossip", "n": 1}); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if got := read(t, c); !strings.Contains(got, `"n":1`) {
			t.Fatalf("got %s", got)
		}
	}
	waitFor(t, "writers to end", func() bool { return writers() == 0 })
}

// writers counts the goroutines running a connection's writer.
func writers() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("consumer.(*Server).write("))
}

// A busy client's frames are gathered into fewer writes: a frame for a
// client written to a moment ago waits WriteDelay, and those that come
// meanwhile go with it.
func TestWriteDelayGathersFrames(t *testing.T) {
	h := newHarness(t, newDemo(""), func(s *consumer.Server) { s.WriteDelay = 200 * time.Millisecond })
	c := h.dialFrames(nil)
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 1 })
	send := func(i int) {
		if err := h.groupSend("gossip", map[string]any{"type": "name.gossip", "i": i}); err != nil {
			t.Fatal(err)
		}
	}
	send(0) // a quiet client: written at once
	if _, p, err := c.next(); err != nil || frameIndex(t, p) != 0 {
		t.Fatalf("first frame %q %v", p, err)
	}
	waitFor(t, "the writer to end", func() bool { return writers() == 0 })
	start := time.Now()
	for i := 1; i <= 10; i++ {
		send(i) // now busy: these wait, together
	}
	for i := 1; i <= 10; i++ {
		_, p, err := c.next()
		if err != nil || frameIndex(t, p) != i {
			t.Fatalf("frame %d: %q %v", i, p, err)
		}
		if i == 1 && time.Since(start) < 150*time.Millisecond {
			t.Fatalf("a busy client's frame went out after %v, before WriteDelay", time.Since(start))
		}
	}
}

// An event stream gets its frames, in order, and keep-alive comments.
func TestEventStreamBatchesAndKeepAlive(t *testing.T) {
	h := newHarness(t, newDemo(""), func(s *consumer.Server) { s.PingInterval = 20 * time.Millisecond })
	req, _ := http.NewRequest(http.MethodGet, h.http.URL+"/", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 1 })
	for i := range 50 {
		if err := h.groupSend("gossip", map[string]any{"type": "name.gossip", "i": i}); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(resp.Body)
	next, pings := 0, 0
	for next < 50 || pings < 2 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events and %d comments: %v", next, pings, err)
		}
		switch {
		case strings.HasPrefix(line, "data: "):
			if got := frameIndex(t, []byte(line[6:])); got != next {
				t.Fatalf("event %d arrived as %d", next, got)
			}
			next++
		case line == ": ping\n":
			pings++
		}
	}
}
