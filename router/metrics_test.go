package router

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
)

// TestInstrumentKeepsOptionalSenders checks that the metrics wrapper
// offers LocalSender and OnceSender exactly when the layer does: the
// notifier picks its way of sending by them.
func TestInstrumentKeepsOptionalSenders(t *testing.T) {
	mem := channellayer.NewMemory()
	t.Cleanup(func() { _ = mem.Close() })
	for _, tc := range []struct {
		name        string
		layer       channellayer.Layer
		local, once bool
	}{
		{"memory", mem, true, true},
		{"local only", struct {
			channellayer.Layer
			channellayer.LocalSender
		}{mem, mem}, true, false},
		{"plain", struct{ channellayer.Layer }{mem}, false, false},
	} {
		l := NewMetrics(&consumer.Server{Layer: mem}, mem).Instrument(tc.layer)
		_, local := l.(channellayer.LocalSender)
		_, once := l.(channellayer.OnceSender)
		if local != tc.local || once != tc.once {
			t.Errorf("%s: wrapper is LocalSender %v, OnceSender %v; want %v, %v", tc.name, local, once, tc.local, tc.once)
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
		_ = mem.GroupSend(context.Background(), fmt.Sprintf("room.%d", i), msg)
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
