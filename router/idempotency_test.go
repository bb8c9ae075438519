package router_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/channellayer"
)

// TestIdempotentGroupSend: a group send retried with the same key is
// sent once and answered as the first was; the same key with another
// body is refused; the same key for another group is another request.
func TestIdempotentGroupSend(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	c := e.mustDial("/notifications/")
	msg := `{"type":"name.gossip","n":1}`
	status, first, h := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", "send-1")
	if status != http.StatusAccepted || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first send: %d %s %v", status, first, h)
	}
	status, again, h := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", "send-1")
	if status != http.StatusAccepted || again != first || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s (replayed %q), want %s replayed", status, again, h.Get("Idempotent-Replayed"), first)
	}
	status, body, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":2}`, "Idempotency-Key", "send-1")
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, `"idempotency_key_reused"`) {
		t.Fatalf("same key, other body: %d %s, want 422 idempotency_key_reused", status, body)
	}
	// Another target: not a retry of the first.
	status, body, h = e.do("POST", "/api/groups/nobody/send", msg, "Idempotency-Key", "send-1")
	if status != http.StatusNotFound || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("same key, other group: %d %s, want 404 not replayed", status, body)
	}
	if status, _, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":"sentinel"}`); status != http.StatusAccepted {
		t.Fatal(status)
	}
	if got := read(t, c); !strings.Contains(got, `"n":1`) {
		t.Fatalf("got %s, want the keyed message", got)
	}
	if got := read(t, c); !strings.Contains(got, "sentinel") {
		t.Fatalf("got %s after the keyed message, want the sentinel: the retry was sent again", got)
	}
}

func TestBadIdempotencyKey(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	for _, key := range []string{strings.Repeat("k", 256), "caf\u00e9", "tab\there"} {
		for _, path := range []string{"/api/groups/gossip/send", "/api/channels/x/send"} {
			status, body, _ := e.do("POST", path, `{"type":"x","author":"a","message":"b"}`, "Idempotency-Key", key)
			if status != http.StatusBadRequest || !strings.Contains(body, `"bad_idempotency_key"`) {
				t.Errorf("POST %s with key %q: %d %s, want 400 bad_idempotency_key", path, key, status, body)
			}
		}
	}
}

// failingOnce is a layer whose first GroupSend fails as an unreachable
// layer does.
type failingOnce struct {
	channellayer.Layer
	sends atomic.Int32
}

func (l *failingOnce) GroupSend(ctx context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	if l.sends.Add(1) == 1 {
		return channellayer.SendResult{}, fmt.Errorf("%w: test", channellayer.ErrUnavailable)
	}
	return l.Layer.GroupSend(ctx, group, msg)
}

// TestIdempotentRetryAfter503: a 503 is not replayed: the retry with the
// same key is tried, and its answer is the one replayed after.
func TestIdempotentRetryAfter503(t *testing.T) {
	layer := &failingOnce{Layer: channellayer.NewMemory()}
	e := newEnv(t, layer, "")
	c := e.mustDial("/notifications/")
	msg := `{"type":"name.gossip","n":1}`
	status, _, h := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", "k")
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Fatalf("first send: %d %v, want 503 with Retry-After", status, h)
	}
	status, body, h := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", "k")
	if status != http.StatusAccepted || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after 503: %d %s %v, want 202 not replayed", status, body, h)
	}
	if got := read(t, c); !strings.Contains(got, `"n":1`) {
		t.Fatalf("got %s", got)
	}
	status, again, h := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", "k")
	if status != http.StatusAccepted || again != body || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("third: %d %s %v, want the 202 replayed", status, again, h)
	}
	if n := layer.sends.Load(); n != 2 {
		t.Fatalf("%d sends reached the layer, want 2", n)
	}
}

// TestLongIdempotencyKeyOnSend: a key as long as the API accepts is longer
// than a layer records, with its scope; the send must still be applied once,
// not refused.
func TestLongIdempotencyKeyOnSend(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	c := e.mustDial("/notifications/")
	key := strings.Repeat("k", 255)
	msg := `{"type":"name.gossip","n":1}`
	for i := range 2 {
		if status, body, _ := e.do("POST", "/api/groups/gossip/send", msg, "Idempotency-Key", key); status != http.StatusAccepted {
			t.Fatalf("send %d with a 255-byte key: %d %s, want 202", i, status, body)
		}
	}
	if status, _, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":"sentinel"}`); status != http.StatusAccepted {
		t.Fatal(status)
	}
	if got := read(t, c); !strings.Contains(got, `"n":1`) {
		t.Fatalf("got %s, want the keyed message", got)
	}
	if got := read(t, c); !strings.Contains(got, "sentinel") {
		t.Fatalf("got %s after the keyed message, want the sentinel", got)
	}
}
