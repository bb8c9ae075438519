package consumer

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// dropLogEvery is how long dropped messages are gathered into one log
// line.
const dropLogEvery = time.Second

// maxDropTypes bounds the message types one line counts apart; drops of
// more types are counted together.
const maxDropTypes = 100

// dropLog gathers the layer messages a server drops for want of a
// handler into one log line per type every dropLogEvery, with their
// count: one group message that no consumer handles, sent to a group of
// a thousand members, would otherwise be a thousand lines. Stats still
// counts every drop.
type dropLog struct {
	mu     sync.Mutex
	counts map[string]int64 // by message type, since the last line
	timer  *time.Timer      // writes the next line; nil while nothing is gathered
}

// noHandler records a dropped message of type msgType, to be logged to
// log within dropLogEvery.
func (d *dropLog) noHandler(log *slog.Logger, msgType string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.counts == nil {
		d.counts = make(map[string]int64)
	}
	if _, ok := d.counts[msgType]; !ok && len(d.counts) >= maxDropTypes {
		msgType = "(other types)"
	}
	d.counts[msgType]++
	if d.timer == nil {
		d.timer = time.AfterFunc(dropLogEvery, func() { d.flush(log) })
	}
}

// flush logs what was gathered now; Shutdown calls it so that nothing
// gathered is lost.
func (d *dropLog) flush(log *slog.Logger) {
	d.mu.Lock()
	counts := d.counts
	if d.timer != nil {
		d.timer.Stop()
	}
	d.counts, d.timer = nil, nil
	d.mu.Unlock()
	for _, typ := range slices.Sorted(maps.Keys(counts)) {
		log.Warn("consumer: dropped layer messages of a type with no handler", "type", typ, "count", counts[typ])
	}
}
