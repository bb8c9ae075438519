package notifier_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/notifier"
)

// lockedBuffer is a log sink that a test reads while the Listener writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestLayerClosedUnderListenerSkipsNothing: a row the Listener offers to
// a layer that was closed (as at shutdown, if the layer goes first) is
// not known to be sent, so it must not be recorded as sent, or no
// instance would ever send it.
func TestLayerClosedUnderListenerSkipsNothing(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	var log lockedBuffer
	startListener(t, pool, layer, notifier.Config{SharedLayer: true,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err := layer.Close(); err != nil {
		t.Fatal(err)
	}
	insert(t, pool, "ana", "sent while the layer is closed")
	var seq int64
	if err := pool.QueryRow(t.Context(), `SELECT max(seq) FROM herald_log`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	// Wait for the Listener to have offered the row: it either gives up
	// on it or gives up the session.
	deadline := time.Now().Add(waitFor)
	for s := log.String(); !strings.Contains(s, "delivery failed") && !strings.Contains(s, "reconnecting"); s = log.String() {
		if time.Now().After(deadline) {
			t.Fatalf("the Listener never offered the row:\n%s", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var through int64
	if err := pool.QueryRow(t.Context(), `SELECT coalesce(max(through), 0) FROM herald_sent`).Scan(&through); err != nil {
		t.Fatal(err)
	}
	if through >= seq {
		t.Fatalf("row %d recorded as sent (through %d) though the layer was closed:\n%s", seq, through, log.String())
	}
}
