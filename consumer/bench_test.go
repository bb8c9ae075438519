package consumer_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// pipeListener is a net.Listener whose connections are in-memory pipes,
// so a benchmark can hold 10,000 WebSockets without 20,000 file
// descriptors (a process here may hold at most 20,000).
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// BenchmarkGroupFanout measures group sends reaching every member of the
// group over real WebSocket connections: the layer's fan-out, each
// connection's queue and writer, framing, and the clients' reads. One op
// is burst messages sent back to back, then waiting until every member
// has all of them; deliveries/s counts frames received, and cpu-ns/delivery
// is the process's CPU time (server and clients together, from
// getrusage) per frame received, which other processes on the machine do
// not inflate the way they do wall-clock time.
//
// Connections run over in-memory pipes (transport=pipe), which need no
// file descriptors but hand every write synchronously to the reader, and
// over loopback TCP (transport=tcp) where the file limit allows it.
// client=coder members are coder/websocket clients; client=raw members
// read frames straight from the connection, as the load tool does, so
// that the server's share of the work shows.
func BenchmarkGroupFanout(b *testing.B) {
	for _, bc := range []struct {
		transport string
		members   int
		client    string
		burst     int
	}{
		{"pipe", 1000, "coder", 1},
		{"pipe", 10000, "coder", 1},
		{"tcp", 1000, "coder", 1},
		{"tcp", 1000, "raw", 1},
		{"tcp", 1000, "raw", 10},
		{"pipe", 10000, "raw", 1},
	} {
		name := fmt.Sprintf("transport=%s/members=%d/client=%s/burst=%d", bc.transport, bc.members, bc.client, bc.burst)
		b.Run(name, func(b *testing.B) {
			benchFanout(b, bc.members, bc.transport == "tcp", bc.client == "raw", bc.burst)
		})
	}
}

func benchFanout(b *testing.B, members int, tcp, raw bool, burst int) {
	layer := channellayer.NewMemory()
	defer layer.Close()
	// No WriteDelay: one op follows the last at once, so every client
	// would count as busy and each op would wait the delay. The load tool
	// measures the delay's effect at a steady rate.
	conns := &consumer.Server{Layer: layer, PublicGroups: []string{"gossip"}, QueueBytes: 64 << 20, MaxConnections: members, MaxConnectionsPerAddr: members, WriteDelay: -1}
	ctor := newDemo("")
	var ln net.Listener
	client := &http.Client{}
	url := "ws://pipe/notifications/"
	dial := (&net.Dialer{}).DialContext
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ln, url = l, "ws://"+l.Addr().String()+"/notifications/"
	} else {
		pl := newPipeListener()
		ln, dial = pl, pl.dial
		client.Transport = &http.Transport{DialContext: pl.dial, MaxIdleConnsPerHost: -1}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns.Serve(w, r, consumer.Route{Pattern: "/notifications/", New: ctor})
	})}
	go srv.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = conns.Shutdown(ctx)
		_ = srv.Close()
	}()

	var received atomic.Int64
	var want atomic.Int64
	done := make(chan struct{}, 1)
	got := func(n int64) {
		if received.Add(n) == want.Load() {
			done <- struct{}{}
		}
	}
	var readers sync.WaitGroup
	for i := 0; i < members; i++ {
		readers.Add(1)
		if raw {
			nc, err := dialRaw(dial, url)
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				defer readers.Done()
				defer nc.Close()
				readRaw(nc, got)
			}()
			continue
		}
		c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			defer readers.Done()
			defer c.CloseNow()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
				got(1)
			}
		}()
	}
	for conns.Stats().Open < int64(members) {
		time.Sleep(time.Millisecond)
	}
	msg, err := channellayer.NewMessage(map[string]any{
		"type": "name.gossip", "event": "New Post", "sender": "bench",
		"message": "a message of about the size of a short post, with some words in it", "id": 12345,
	})
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		want.Store(int64(members) * int64(burst) * int64(i+1))
		for range burst {
			if _, err := layer.GroupSend(context.Background(), "gossip", msg); err != nil {
				b.Fatal(err)
			}
		}
		<-done
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	deliveries := float64(members) * float64(burst) * float64(b.N)
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	if s := conns.Stats().SlowDisconnects; s != 0 {
		b.Fatalf("%d slow disconnects", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = conns.Shutdown(ctx)
	readers.Wait()
}

// cpuTime is the CPU time, user and system, this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dialRaw opens a WebSocket by hand and returns the connection, ready to
// read frames.
func dialRaw(dial func(context.Context, string, string) (net.Conn, error), url string) (*rawClient, error) {
	host := strings.TrimPrefix(url, "ws://")
	host, path, _ := strings.Cut(host, "/")
	nc, err := dial(context.Background(), "tcp", host)
	if err != nil {
		return nil, err
	}
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: aGVyYWxkLWJlbmNoLWtleQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("upgrade: %v %v", resp, err)
	}
	return &rawClient{Conn: nc, br: br}, nil
}

type rawClient struct {
	net.Conn
	br *bufio.Reader
}

// readRaw reads unmasked server frames until the connection ends,
// calling got with the number of text frames each time it has read what
// one read returned.
func readRaw(c *rawClient, got func(int64)) {
	var hdr [8]byte
	for {
		var n int64
		for {
			if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
				if n > 0 {
					got(n)
				}
				return
			}
			op, size := hdr[0]&0x0f, int(hdr[1]&0x7f)
			switch size {
			case 126:
				if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
					return
				}
				size = int(binary.BigEndian.Uint16(hdr[:2]))
			case 127:
				if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
					return
				}
				size = int(binary.BigEndian.Uint64(hdr[:8]))
			}
			if op == 0x9 { // ping: answer with its payload, masked with a zero key
				pong := make([]byte, 6+size)
				pong[0], pong[1] = 0x8a, 0x80|byte(size)
				if _, err := io.ReadFull(c.br, pong[6:]); err != nil {
					return
				}
				_, _ = c.Write(pong)
			} else if _, err := c.br.Discard(size); err != nil {
				return
			}
			switch op {
			case 0x1:
				n++
			case 0x8:
				if n > 0 {
					got(n)
				}
				// Answer the close, so that the server's close handshake
				// ends at once.
				_, _ = c.Write([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
				return
			}
			if c.br.Buffered() == 0 {
				break
			}
		}
		if n > 0 {
			got(n)
		}
	}
}
