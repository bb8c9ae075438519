package consumer_test

import (
	"bytes"
	"compress/flate"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/consumer"
)

// offerDeflate is the request header of a client that offers
// permessage-deflate.
const offerDeflate = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"

func inflate(t *testing.T, p []byte) []byte {
	t.Helper()
	out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))))
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

// With Compression on, a client that offers permessage-deflate gets it
// without context takeover: large messages come compressed, each on its
// own (RSV1 set), small ones as they are; a coder/websocket client reads
// both.
func TestCompression(t *testing.T) {
	h := newHarness(t, newDemo(""), func(s *consumer.Server) { s.Compression = true })
	c, resp := h.dialFramesWith(offerDeflate, nil)
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	if !strings.Contains(ext, "permessage-deflate") || !strings.Contains(ext, "server_no_context_takeover") {
		t.Fatalf("extensions agreed: %q, want permessage-deflate without server context takeover", ext)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cc, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.http.URL, "http")+"/",
		&websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseNow()
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 2 })

	big := strings.Repeat("a gossip worth repeating; ", 100)
	for _, text := range []string{big, "short", big + "again"} {
		msg := map[string]any{"type": "name.gossip", "message": text}
		if err := h.groupSend("gossip", msg); err != nil {
			t.Fatal(err)
		}
		b0, p, err := c.nextWithBits()
		if err != nil {
			t.Fatal(err)
		}
		compressed := b0&0x40 != 0
		if compressed {
			if len(p) >= len(text) {
				t.Errorf("compressed %d bytes of text into %d", len(text), len(p))
			}
			p = inflate(t, p)
		}
		if compressed != (len(text) > 512) {
			t.Errorf("a %d-byte message: compressed %v", len(text), compressed)
		}
		if !strings.Contains(string(p), text) || !strings.HasPrefix(string(p), "{") {
			t.Fatalf("raw client got %.60q..., want the message", p)
		}
		_, got, err := cc.Read(ctx)
		if err != nil || !strings.Contains(string(got), text) {
			t.Fatalf("coder/websocket client: %.60q %v", got, err)
		}
	}
}

// Compression is off unless asked for: a client that offers it gets
// plain frames.
func TestCompressionOffByDefault(t *testing.T) {
	h := newHarness(t, newDemo(""))
	c, resp := h.dialFramesWith(offerDeflate, nil)
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("extensions agreed: %q, want none", ext)
	}
	waitFor(t, "open", func() bool { return h.srv.Stats().Open == 1 })
	text := strings.Repeat("x", 2000)
	if err := h.groupSend("gossip", map[string]any{"type": "name.gossip", "message": text}); err != nil {
		t.Fatal(err)
	}
	if op, p, err := c.next(); err != nil || op != 0x1 || !strings.Contains(string(p), text) {
		t.Fatalf("frame %#x %.40q... %v, want a plain text frame", op, p, err)
	}
}
