package channellayer_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	layertest.Run(t, func(t *testing.T) channellayer.Layer {
		l, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{History: layertest.History})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func newMemory(t *testing.T, cfg channellayer.MemoryConfig) *channellayer.Memory {
	t.Helper()
	l, err := channellayer.NewMemoryWith(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// waitStats polls l's history stats until ok accepts them.
func waitStats(t *testing.T, l *channellayer.Memory, what string, ok func(channellayer.HistoryStats) bool) channellayer.HistoryStats {
	t.Helper()
	deadline := time.Now().Add(layertest.Timeout)
	for {
		st := l.HistoryStats()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %+v after %v", what, st, layertest.Timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMemoryHistorySweep: groups sent to once, and never again, leave
// nothing behind once their age has passed: their messages and the
// groups themselves are removed by the layer's sweep, not when touched.
func TestMemoryHistorySweep(t *testing.T) {
	const age = 200 * time.Millisecond
	l := newMemory(t, channellayer.MemoryConfig{History: []channellayer.HistoryPolicy{{Pattern: "room.*", Size: 100, Age: age}}})
	ctx := context.Background()
	const n = 300
	for i := range n {
		_, _ = l.GroupSend(ctx, fmt.Sprintf("room.%d", i), layertest.Msg(t, "t.r", i))
	}
	st := l.HistoryStats()
	if st.Groups != n || st.Entries != n || st.Bytes <= 0 {
		t.Fatalf("after %d sends to %d groups: %+v", n, n, st)
	}
	st = waitStats(t, l, "expired histories", func(st channellayer.HistoryStats) bool { return st.Groups == 0 })
	if st.Entries != 0 || st.Bytes != 0 || st.Expired != n || st.DroppedForSpace != 0 {
		t.Fatalf("after the sweep: %+v; want nothing held, %d expired", st, n)
	}
}

// TestMemoryHistoryMaxBytes: the histories together never hold more than
// HistoryMaxBytes; the oldest messages of every group go first, and a
// client resuming from before them is told of a gap.
func TestMemoryHistoryMaxBytes(t *testing.T) {
	const maxBytes = 16 << 10
	l := newMemory(t, channellayer.MemoryConfig{
		History:         []channellayer.HistoryPolicy{{Pattern: "room.*", Size: 1000}},
		HistoryMaxBytes: maxBytes,
	})
	ctx := context.Background()
	in := layertest.NewInbox(2000)
	name, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 200)
	ids := map[string][]string{}
	for i := range 400 {
		g := fmt.Sprintf("room.%d", i%4)
		if i == 0 {
			g = "room.old" // the oldest message of all, in a group never sent to again
		}
		if err := l.GroupAdd(ctx, g, name); err != nil {
			t.Fatal(err)
		}
		msg, err := channellayer.NewMessage(map[string]any{"type": "t.m", "n": i, "pad": pad})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.GroupSend(ctx, g, msg); err != nil {
			t.Fatal(err)
		}
		ids[g] = append(ids[g], in.Next(t).ID)
		if st := l.HistoryStats(); st.Bytes > maxBytes {
			t.Fatalf("after send %d the histories hold %d bytes, more than %d: %+v", i, st.Bytes, maxBytes, st)
		}
	}
	st := l.HistoryStats()
	if st.MaxBytes != maxBytes || st.DroppedForSpace == 0 || st.Entries == 0 || st.Entries > maxBytes/200 {
		t.Fatalf("stats %+v: want entries dropped for space and at most %d kept", st, maxBytes/200)
	}
	if st.Groups != 4 {
		t.Fatalf("%d groups hold history, want 4: room.old's only message is the oldest and went first", st.Groups)
	}
	if _, err := l.History(ctx, "room.old", ids["room.old"][0], 10); !errors.Is(err, channellayer.ErrHistoryGap) {
		t.Fatalf("resume room.old from its dropped message: %v, want ErrHistoryGap", err)
	}
	for g, gids := range ids {
		if g == "room.old" {
			continue
		}
		// The oldest are gone; the newest are kept.
		if _, err := l.History(ctx, g, gids[0], 1000); !errors.Is(err, channellayer.ErrHistoryGap) {
			t.Errorf("resume %s from its first message: %v, want ErrHistoryGap", g, err)
		}
		since := gids[len(gids)-4]
		msgs, err := l.History(ctx, g, since, 1000)
		if err != nil || len(msgs) != 3 || msgs[2].ID() != gids[len(gids)-1] {
			t.Errorf("resume %s from its 4th last message: %d messages, %v; want the last 3", g, len(msgs), err)
		}
	}
}

// TestMemoryHistoryConcurrent: sends, reads, drops for space and sweeps
// racing each other keep the counts consistent (run with -race).
func TestMemoryHistoryConcurrent(t *testing.T) {
	l := newMemory(t, channellayer.MemoryConfig{
		History:         []channellayer.HistoryPolicy{{Pattern: "room.*", Size: 50, Age: 150 * time.Millisecond}},
		HistoryMaxBytes: 32 << 10,
	})
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				g := fmt.Sprintf("room.%d", (w*7+i)%20)
				_, _ = l.GroupSend(ctx, g, layertest.Msg(t, "t.c", i))
				_, _ = l.History(ctx, g, "1-0", 100)
				if st := l.HistoryStats(); st.Bytes > 32<<10+4096 || st.Entries < 0 {
					t.Errorf("stats %+v", st)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitStats(t, l, "every history expired", func(st channellayer.HistoryStats) bool {
		return st.Groups == 0 && st.Entries == 0 && st.Bytes == 0
	})
}

func TestMemoryGroupLimit(t *testing.T) {
	layertest.GroupLimit(t, newMemory(t, channellayer.MemoryConfig{MaxGroups: 3}), 3)
}
