package consumer_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
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

// BenchmarkGroupFanout measures one group send reaching every member of
// the group over real WebSocket connections: the layer's fan-out, each
// connection's queue and writer, framing, and the clients' reads. One op
// is one message delivered to all members; deliveries/s counts frames
// received.
//
// Connections run over in-memory pipes (transport=pipe), which need no
// file descriptors but hand every write synchronously to the reader, and
// over loopback TCP (transport=tcp) where the file limit allows it.
func BenchmarkGroupFanout(b *testing.B) {
	for _, bc := range []struct {
		members int
		tcp     bool
	}{{1000, false}, {10000, false}, {1000, true}} {
		transport := "pipe"
		if bc.tcp {
			transport = "tcp"
		}
		b.Run(fmt.Sprintf("transport=%s/members=%d", transport, bc.members), func(b *testing.B) {
			benchFanout(b, bc.members, bc.tcp)
		})
	}
}

func benchFanout(b *testing.B, members int, tcp bool) {
	layer := channellayer.NewMemory()
	defer layer.Close()
	conns := &consumer.Server{Layer: layer, QueueSize: 4096, MaxConnections: members, MaxConnectionsPerAddr: members}
	ctor := consumer.NewNotification("")
	var ln net.Listener
	client := &http.Client{}
	url := "ws://pipe/notifications/"
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ln, url = l, "ws://"+l.Addr().String()+"/notifications/"
	} else {
		pl := newPipeListener()
		ln = pl
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
	var readers sync.WaitGroup
	for i := 0; i < members; i++ {
		c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPClient: client})
		if err != nil {
			b.Fatal(err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer c.CloseNow()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
				if received.Add(1) == want.Load() {
					done <- struct{}{}
				}
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
	start := time.Now()
	for i := 0; i < b.N; i++ {
		want.Store(int64(members) * int64(i+1))
		if err := layer.GroupSend(context.Background(), "gossip", msg); err != nil {
			b.Fatal(err)
		}
		<-done
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(members)*float64(b.N)/elapsed.Seconds(), "deliveries/s")
	if s := conns.Stats().SlowDisconnects; s != 0 {
		b.Fatalf("%d slow disconnects", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = conns.Shutdown(ctx)
	readers.Wait()
}
