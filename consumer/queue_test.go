package consumer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/consumer"
)

// A burst far larger than any count of messages a queue used to hold,
// sent faster than the writer writes (each write gathers for WriteDelay),
// reaches a client that reads, whole and in order: a burst it drains is
// not slowness.
func TestBurstIsNotSlowness(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec), func(s *consumer.Server) { s.WriteDelay = 50 * time.Millisecond })
	c := h.dialFrames(nil)
	waitFor(t, "joined", func() bool { return rec.channelName() != "" })
	const n = 5000
	for i := range n {
		if err := h.groupSend("room", map[string]any{"type": "chat.message", "i": i, "text": "a post of some ordinary length"}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for want := range n {
		op, p, err := c.next()
		if err != nil || op != 0x1 {
			t.Fatalf("frame %d: op %d, %v (stats %+v)", want, op, err, h.srv.Stats())
		}
		if got := frameIndex(t, p); got != want {
			t.Fatalf("frame %d arrived as %d", want, got)
		}
	}
	if st := h.srv.Stats(); st.SlowDisconnects != 0 || st.Dropped.Slow != 0 {
		t.Fatalf("a reading client counted as slow: %+v", st)
	}
}

// A client that stops reading is cut when the bytes queued for it pass
// QueueBytes, and what was queued for it is counted as dropped.
func TestQueueBytesCutsAClientThatStopsReading(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec), func(s *consumer.Server) {
		s.QueueBytes, s.PingInterval = 256<<10, -1
	})
	c := h.dialFrames(nil) // reads nothing until it is cut
	waitFor(t, "joined", func() bool { return rec.channelName() != "" })
	pad := strings.Repeat("x", 16<<10)
	sent := 0
	for ; sent < 2000 && h.srv.Stats().SlowDisconnects == 0; sent++ {
		if err := h.groupSend("room", map[string]any{"type": "chat.message", "pad": pad}); err != nil {
			break
		}
	}
	st := h.srv.Stats()
	for {
		op, p, err := c.next()
		if err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		if op == 0x8 {
			if code := binary.BigEndian.Uint16(p); code != uint16(consumer.StatusTooSlow) {
				t.Fatalf("close code %d, want %d", code, consumer.StatusTooSlow)
			}
			break
		}
	}
	// 256 KiB of 16 KiB messages: at most 16 waited when it was cut (some
	// in the writer's hands, not counted as dropped), and one did not fit.
	if st.SlowDisconnects != 1 || st.Dropped.Slow < 1 || st.Dropped.Slow > 17 {
		t.Fatalf("after %d sends: %+v", sent, st)
	}
}

// WaitForRoom returns at once while nobody is pressed, waits while a
// client has more than half of QueueBytes queued, and returns when its
// writer drains it.
func TestWaitForRoomWaitsForTheDrain(t *testing.T) {
	rec := newRecorder()
	h := newHarness(t, single(rec), func(s *consumer.Server) {
		// Half of it is far more than socket buffers hold (a few MiB on
		// loopback), so a pressed client is one whose writer is stuck.
		s.QueueBytes, s.WriteTimeout, s.PingInterval = 64<<20, time.Minute, -1
	})
	if err := h.srv.WaitForRoom(canceled()); err != nil {
		t.Fatalf("nobody pressed: %v", err)
	}
	c := h.dialFrames(nil) // reads nothing until told
	waitFor(t, "joined", func() bool { return rec.channelName() != "" })
	// Fill the socket buffers, then half the queue. A canceled context
	// makes WaitForRoom say at once whether it would wait.
	pad := strings.Repeat("x", 16<<10)
	pressed := false
	for i := 0; i < 4000 && !pressed; i++ { // 4000 messages pass the bound
		if err := h.groupSend("room", map[string]any{"type": "chat.message", "i": i, "pad": pad}); err != nil {
			t.Fatal(err)
		}
		pressed = h.srv.WaitForRoom(canceled()) != nil
	}
	if !pressed {
		t.Fatal("a client that does not read never pressed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.srv.WaitForRoom(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForRoom while pressed: %v, want to wait until the deadline", err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- h.srv.WaitForRoom(context.Background()) }()
	go func() { // the client reads now; the test's end closes it
		for {
			if _, _, err := c.next(); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-done:
		// WriteTimeout is a minute: only the drain can end the wait this soon.
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatalf("WaitForRoom did not return %v after the client began reading", time.Since(start))
	}
	if st := h.srv.Stats(); st.SlowDisconnects != 0 {
		t.Fatalf("the client was cut: %+v", st)
	}
}

// WaitForRoom gives up on a client that stays pressed for WriteTimeout,
// so that one client does not stall every producer.
func TestWaitForRoomGivesUpAfterWriteTimeout(t *testing.T) {
	release := make(chan struct{})
	j := &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
		// Queued before the connection is accepted, so no writer takes it.
		pad := strings.Repeat("x", 64<<10)
		for range 10 {
			if err := c.SendJSON(map[string]string{"type": "pad", "pad": pad}); err != nil {
				return err
			}
		}
		<-release
		return nil
	}}
	const timeout = 200 * time.Millisecond
	h := newHarness(t, func(*http.Request) consumer.Consumer { return j }, func(s *consumer.Server) {
		s.QueueBytes, s.WriteTimeout = 1<<20, timeout
	})
	dialed := make(chan struct{})
	begun := time.Now() // before the client could be pressed
	go func() {
		defer close(dialed)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL, nil)
		req.Header.Set("Accept", "text/event-stream")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	defer func() { <-dialed }()
	defer close(release)
	waitFor(t, "pressed", func() bool { return h.srv.WaitForRoom(canceled()) != nil })
	if err := h.srv.WaitForRoom(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begun); d < timeout {
		t.Fatalf("returned %v after the client came, before WriteTimeout (%v)", d, timeout)
	}
	// Pressed for WriteTimeout, the client holds nobody back any more,
	// though its queue is as full as it was. Its own timer says so, and may
	// run just after the one WaitForRoom gave up on.
	waitFor(t, "a client pressed for longer than WriteTimeout to stop counting", func() bool {
		return h.srv.WaitForRoom(canceled()) == nil
	})
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
