package router

import (
	"testing"

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
