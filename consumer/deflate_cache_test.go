package consumer

import (
	"bytes"
	"strings"
	"testing"
)

// A message shared by many recipients is compressed once: the same bytes
// give the same compressed payload back, while other bytes with the same
// content are compressed anew (the cache goes by identity, which holding
// the message keeps unique).
func TestDeflaterCompressesEachMessageOnce(t *testing.T) {
	var d deflater
	msg := []byte(`{"type":"name.gossip","message":"` + strings.Repeat("worth repeating ", 64) + `"}`)
	first := d.compress(msg)
	if first == nil || len(first) >= len(msg) {
		t.Fatalf("compressed %d bytes into %d", len(msg), len(first))
	}
	if again := d.compress(msg); &again[0] != &first[0] {
		t.Fatal("the same message was compressed twice")
	}
	copyOf := bytes.Clone(msg)
	if other := d.compress(copyOf); &other[0] == &first[0] || !bytes.Equal(other, first) {
		t.Fatal("another message with the same bytes did not get a compression of its own")
	}
	if d.compress([]byte(`{"type":"x"}`)) != nil {
		t.Fatal("a small message was compressed")
	}
}
