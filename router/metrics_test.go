package router

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// TestInstrumentHidesNothing checks that the metrics wrapper answers
// every method as the layer does, and labels a group send by what its
// result says: sent, kept in the history with no member, or nowhere.
func TestInstrumentHidesNothing(t *testing.T) {
	mem, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{
		History: []channellayer.HistoryPolicy{{Pattern: "room.*", Size: 10}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	m := NewMetrics(&consumer.Server{Layer: mem}, mem)
	l := m.Instrument(mem)
	ctx := context.Background()
	msg, _ := channellayer.NewMessage(map[string]any{"type": "t.m"})

	kept, err := l.GroupSend(ctx, "room.1", msg)
	if err != nil || !kept.Kept() || kept.Delivered {
		t.Fatalf("send to a memberless group with history: %+v, %v", kept, err)
	}
	if r, err := l.GroupSendOnce(ctx, "src", 1, "room.1", msg); err != nil || r.Skipped {
		t.Fatalf("GroupSendOnce through the wrapper: %+v, %v", r, err)
	}
	if seq, ok, err := l.LastSent(ctx, "src", "room.1"); err != nil || !ok || seq != 1 {
		t.Fatalf("LastSent through the wrapper: %d %v %v", seq, ok, err)
	}
	if msgs, err := l.History(ctx, "room.1", kept.ID, 10); err != nil || len(msgs) != 1 {
		t.Fatalf("History through the wrapper: %v, %v", msgs, err)
	}
	if _, err := l.History(ctx, "plain", "0-0", 10); !errors.Is(err, channellayer.ErrNoHistory) {
		t.Fatalf("History of a group without one: %v, want ErrNoHistory", err)
	}
	if err := l.Check(ctx); err != nil || l.KeyWindow() != mem.KeyWindow() || l.Stats().History == nil {
		t.Fatalf("Check %v, KeyWindow %v, Stats %+v: want the layer's own", err, l.KeyWindow(), l.Stats())
	}
	if _, err := l.GroupSend(ctx, "plain", msg); !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("send to a memberless group without history: %v", err)
	}

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`herald_layer_send_duration_seconds_count{op="group_send",result="kept"} 1`,
		`herald_layer_send_duration_seconds_count{op="group_send",result="no_receivers"} 1`,
		`herald_layer_send_duration_seconds_count{op="group_send_once",result="kept"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestMetricsHistoryBound: the in-memory histories' bytes, bound and
// drops are exported, and the bytes stay within the bound.
func TestMetricsHistoryBound(t *testing.T) {
	const maxBytes = 8 << 10
	mem, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{
		History:         []channellayer.HistoryPolicy{{Pattern: "room.*", Size: 1000, Age: time.Hour}},
		HistoryMaxBytes: maxBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	for i := range 200 {
		msg, _ := channellayer.NewMessage(map[string]any{"type": "t.m", "pad": strings.Repeat("x", 100)})
		_, _ = mem.GroupSend(context.Background(), fmt.Sprintf("room.%d", i), msg)
	}
	rec := httptest.NewRecorder()
	NewMetrics(&consumer.Server{Layer: mem}, mem).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	values := map[string]float64{}
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && strings.HasPrefix(name, "herald_history_") {
			values[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	if values["herald_history_max_bytes"] != maxBytes || values["herald_history_bytes"] <= 0 || values["herald_history_bytes"] > maxBytes {
		t.Errorf("history bytes %v, bound %v; want within %d", values["herald_history_bytes"], values["herald_history_max_bytes"], maxBytes)
	}
	if values[`herald_history_dropped_total{reason="space"}`] == 0 || values["herald_history_groups"] >= 200 {
		t.Errorf("metrics %v: want drops for space and fewer than 200 groups kept", values)
	}
}
