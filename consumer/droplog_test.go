package consumer_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/consumer"
)

// syncBuffer is a log destination the test reads while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestDroppedMessageLoggedOnce: a group message that no handler takes,
// sent to 30 members, is 30 drops in Stats but one log line, with the
// count, not a line per connection.
func TestDroppedMessageLoggedOnce(t *testing.T) {
	const members = 30
	var logs syncBuffer
	member := &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
		return c.Layer().GroupAdd(ctx, "room", c.Channel())
	}}
	h := newHarness(t, func(*http.Request) consumer.Consumer { return member }, func(s *consumer.Server) {
		s.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for range members {
		h.dial("")
	}
	waitFor(t, "every member connected", func() bool { return h.srv.Stats().Open == members })
	if err := h.groupSend("room", map[string]any{"type": "nobody.handles.this"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every drop counted", func() bool { return h.srv.Stats().Dropped.NoHandler == members })
	waitFor(t, "the drops logged", func() bool { return strings.Contains(logs.String(), "nobody.handles.this") })
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "nobody.handles.this") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "count=30") {
		t.Errorf("%d log lines about the dropped message, want one with count=30:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
