package consumer

import (
	"bytes"
	"compress/flate"
	"sync"
)

// compressMin is the smallest message the writer compresses on a
// connection that negotiated permessage-deflate: below it the deflate
// block's own overhead eats most of the gain, and a frame is sent as it
// is (a frame without RSV1 is an uncompressed message, RFC 7692).
const compressMin = 512

// deflater compresses messages for permessage-deflate without context
// takeover (RFC 7692): every message is compressed on its own, so a
// connection keeps no compression state at all, and a group message is
// compressed once for every recipient that negotiated the extension, not
// once per recipient. recent remembers the last messages compressed, by
// their shared bytes; holding them keeps their addresses from being
// reused by other messages while they are remembered.
type deflater struct {
	mu     sync.Mutex
	recent [64]deflated
	next   int
}

type deflated struct {
	src []byte // the message as sent to every recipient
	out []byte // its compressed payload; nil when compressing did not pay
}

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed) // BestSpeed is a valid level: no error
	return w
}}

// compress returns data's compressed payload, or nil when data is better
// sent uncompressed. data must not be modified afterwards (Conn.Send's
// rule), and the result must not be either.
func (d *deflater) compress(data []byte) []byte {
	if len(data) < compressMin {
		return nil
	}
	d.mu.Lock()
	for i := range d.recent {
		if e := &d.recent[i]; len(e.src) == len(data) && &e.src[0] == &data[0] {
			out := e.out
			d.mu.Unlock()
			return out
		}
	}
	d.mu.Unlock()

	var buf bytes.Buffer
	w := flateWriters.Get().(*flate.Writer)
	w.Reset(&buf)
	_, _ = w.Write(data) // writes to a bytes.Buffer do not fail
	_ = w.Flush()
	flateWriters.Put(w)
	// Flush ends the output with an empty stored block, 00 00 ff ff,
	// which the sender leaves out and the receiver adds back.
	out := bytes.TrimSuffix(buf.Bytes(), []byte{0x00, 0x00, 0xff, 0xff})
	if len(out) >= len(data) {
		out = nil
	}

	d.mu.Lock()
	d.recent[d.next] = deflated{src: data, out: out}
	d.next = (d.next + 1) % len(d.recent)
	d.mu.Unlock()
	return out
}
