package consumer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// discard is a transport that encodes WebSocket frames and throws each
// batch away, so that the benchmarks below measure the queue, dispatch
// and encoding, not a socket.
type discard struct {
	wsTransport
	writes, bytes int
}

func (d *discard) flush(b *batch) error {
	d.writes++
	d.bytes += b.size
	b.reset()
	return nil
}

func (d *discard) close(websocket.StatusCode, string) error { return nil }

// benchConn returns a connection of the demo route's consumer whose
// writer the caller runs itself, on the benchmark's goroutine.
func benchConn(b *testing.B) (*Conn, *discard) {
	layer := channellayer.NewMemory()
	b.Cleanup(func() { _ = layer.Close() })
	s := &Server{Layer: layer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WriteDelay: -1}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	d := &discard{wsTransport: wsTransport{nc: &wsConn{}}}
	ctor, err := NewForwarder(Forwarder{Join: []string{"gossip"}, Types: []string{"name.gossip"}})
	if err != nil {
		b.Fatal(err)
	}
	c := &Conn{srv: s, stats: s.route("/"), layer: layer, ctx: ctx, cancel: cancel,
		cons: ctor(nil), t: d}
	return c, d
}

// runWriter runs the writer once, as Conn.kick would on a goroutine.
func runWriter(c *Conn) {
	c.mu.Lock()
	c.writing = true
	c.writers.Add(1)
	c.mu.Unlock()
	c.srv.write(c)
}

// BenchmarkDispatch measures the path of one group message through a
// connection, without the socket: Deliver into the queue, the writer
// taking it, the demo route's Dispatch forwarding it (which
// queues the frame), and the frame's encoding into the batch. batch is how
// many messages the writer finds waiting each time it runs.
func BenchmarkDispatch(b *testing.B) {
	data := []byte(`{"type":"name.gossip","event":"New Post","sender":"bench","message":"a message of about the size of a short post, with some words in it","id":12345}`)
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			c, d := benchConn(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				for range n {
					c.DeliverFrom("gossip", "", "name.gossip", data)
				}
				runWriter(c)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
			if d.writes != b.N {
				b.Fatalf("%d writes for %d batches", d.writes, b.N)
			}
		})
	}
}

// BenchmarkEncode measures encoding frames into a batch: a 150-byte
// group message, copied after its header, and a 4 KiB one, sent by
// reference from the shared message with a vectored write.
func BenchmarkEncode(b *testing.B) {
	for _, size := range []int{150, 4096} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			data := make([]byte, size)
			t := wsTransport{nc: &wsConn{vectored: true}}
			bt := getBatch()
			defer putBatch(bt)
			b.ReportAllocs()
			b.SetBytes(16 * int64(size))
			for b.Loop() {
				for range 16 {
					t.frame(bt, "", "", data)
				}
				bt.reset()
			}
		})
	}
}
