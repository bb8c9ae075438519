package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// writeRecorder is a listener whose connections keep every write made
// once armed is set, to see how coder/websocket writes on the hijacked
// connection.
type writeRecorder struct {
	net.Listener
	armed  atomic.Bool
	mu     sync.Mutex
	writes [][]byte
}

func (l *writeRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordedConn{Conn: c, l: l}, nil
}

type recordedConn struct {
	net.Conn
	l *writeRecorder
}

func (c *recordedConn) Write(p []byte) (int, error) {
	if c.l.armed.Load() {
		c.l.mu.Lock()
		c.l.writes = append(c.l.writes, append([]byte(nil), p...))
		c.l.mu.Unlock()
	}
	return c.Conn.Write(p)
}

// splitFrames parses p as whole unmasked frames and returns their
// opcodes, or an error if p ends inside a frame.
func splitFrames(p []byte) ([]byte, error) {
	var ops []byte
	for len(p) > 0 {
		if len(p) < 2 || p[1]&0x80 != 0 {
			return ops, fmt.Errorf("a write starts a frame it does not hold, or a masked frame: % x", p[:min(len(p), 8)])
		}
		n, h := int(p[1]&0x7f), 2
		switch n {
		case 126:
			if len(p) < 4 {
				return ops, errors.New("a write ends inside a frame header")
			}
			n, h = int(binary.BigEndian.Uint16(p[2:])), 4
		case 127:
			if len(p) < 10 {
				return ops, errors.New("a write ends inside a frame header")
			}
			n, h = int(binary.BigEndian.Uint64(p[2:])), 10
		}
		if len(p) < h+n {
			return ops, fmt.Errorf("a write ends inside a frame of opcode %d: %d of %d bytes", p[0]&0x0f, len(p)-h, n)
		}
		ops = append(ops, p[0]&0x0f)
		p = p[h+n:]
	}
	return ops, nil
}

// TestLibraryControlFramesAreWholeWrites pins the coder/websocket
// behaviour that wsframe.go relies on: after the handshake the library
// writes only control frames, each as one whole frame in one Write
// (through the buffer upgrader hands it), so that wsConn's lock keeps
// them from cutting into our batches and sees a close frame by its first
// byte; and its pongs and close frame arrive well formed between our raw
// frames. When upgrading coder/websocket, run this test; if it fails, the
// fast path must change with the library (or give way to Conn.Write).
func TestLibraryControlFramesAreWholeWrites(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &writeRecorder{Listener: ln}
	const frames = 5000
	done := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := &upgrader{ResponseWriter: w, timeout: 5 * time.Second}
		ws, err := websocket.Accept(up, r, nil)
		if err != nil {
			done <- err
			return
		}
		rec.armed.Store(true)
		tr := wsTransport{ws: ws, nc: up.nc}
		read := make(chan error, 1)
		go func() { // answers pings and the close handshake
			for {
				if _, _, err := ws.Read(context.Background()); err != nil {
					read <- err
					return
				}
			}
		}()
		b := getBatch()
		defer putBatch(b)
		for i := range frames {
			tr.frame(b, "", "", fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, strings.Repeat("x", i%300)))
			if i%7 == 6 {
				if err := tr.flush(b); err != nil {
					done <- err
					return
				}
			}
		}
		if err := tr.flush(b); err != nil {
			done <- err
			return
		}
		// The client closes once it has every frame; the library answers.
		<-read
		if err := tr.flush(b); !errors.Is(err, net.ErrClosed) {
			done <- fmt.Errorf("a write after the close frame: %v, want net.ErrClosed", err)
			return
		}
		ws.CloseNow()
		done <- nil
	}))
	srv.Listener = rec
	srv.Start()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	got := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for i := range frames {
			_, p, err := c.Read(ctx)
			if err != nil {
				got <- fmt.Errorf("frame %d: %w", i, err)
				return
			}
			if want := fmt.Sprintf(`{"i":%d,`, i); !strings.HasPrefix(string(p), want) {
				got <- fmt.Errorf("frame %d is %.20q", i, p)
				return
			}
		}
		got <- nil
		for { // on, for the pongs and the close handshake
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	for range 20 { // pongs written while our frames stream
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	<-readDone
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var pongs, closes int
	for _, w := range rec.writes {
		ops, err := splitFrames(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			switch {
			case closes > 0:
				t.Fatalf("opcode %d written after the close frame", op)
			case op == 0xA:
				pongs++
			case op == opClose:
				closes++
			}
		}
		if len(ops) > 0 && ops[0] != opText && len(ops) != 1 {
			t.Fatalf("a control frame shares a write with other frames: opcodes %v", ops)
		}
	}
	if pongs != 20 || closes != 1 {
		t.Fatalf("the library wrote %d pongs and %d close frames, want 20 and 1", pongs, closes)
	}
}

// BenchmarkWSWrite compares the fast path with coder/websocket's public
// writer for the same frames on a loopback connection: a batch of n
// frames is one write here, n locked, buffered and flushed messages
// through Conn.Write.
func BenchmarkWSWrite(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		for _, path := range []string{"batch", "Conn.Write"} {
			b.Run(fmt.Sprintf("frames=%d/path=%s", n, path), func(b *testing.B) {
				ws, tr := benchSocket(b)
				p := fmt.Appendf(nil, `{"type":"chat.message","text":%q}`, strings.Repeat("x", 110))
				batch := getBatch()
				defer putBatch(batch)
				ctx := context.Background()
				b.SetBytes(int64(n * len(p)))
				b.ReportAllocs()
				for b.Loop() {
					if path == "batch" {
						for range n {
							tr.frame(batch, "", "", p)
						}
						if err := tr.flush(batch); err != nil {
							b.Fatal(err)
						}
						continue
					}
					for range n {
						if err := ws.Write(ctx, websocket.MessageText, p); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
			})
		}
	}
}

// benchSocket returns the server side of a WebSocket on loopback TCP
// whose client discards what it reads.
func benchSocket(b *testing.B) (*websocket.Conn, wsTransport) {
	type sock struct {
		ws *websocket.Conn
		tr wsTransport
	}
	ch := make(chan sock, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := &upgrader{ResponseWriter: w, timeout: 10 * time.Second}
		ws, err := websocket.Accept(up, r, nil)
		if err != nil {
			return
		}
		ch <- sock{ws, wsTransport{ws: ws, nc: up.nc}}
		<-release
		ws.CloseNow()
	}))
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", srv.Listener.Addr())
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		buf := make([]byte, 64<<10)
		for {
			if _, err := nc.Read(buf); err != nil {
				return
			}
		}
	}()
	s := <-ch
	b.Cleanup(func() {
		close(release)
		nc.Close()
		<-drained
		srv.Close()
	})
	return s.ws, s.tr
}
