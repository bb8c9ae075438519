package router

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// Idempotency-Key handling, shared by the write routes.
const (
	// IdempotencyHeader names the request header that makes a write
	// apply once.
	IdempotencyHeader = "Idempotency-Key"
	// ReplayedHeader, set to "true", marks an answer repeated for a
	// retried request.
	ReplayedHeader = "Idempotent-Replayed"
	// maxIdempotencyKey is the longest key, in bytes.
	maxIdempotencyKey = 255
	// memoLifetime is how long an answer is replayed for a retry.
	memoLifetime = 24 * time.Hour
	// maxMemo bounds the answers an API remembers; the oldest goes first.
	maxMemo = 10000
)

// IdempotencyKey returns the request's Idempotency-Key, "" if it has
// none. A key that is empty, longer than 255 bytes, not printable ASCII,
// or given twice is answered with 400 (code bad_idempotency_key) here,
// and ok is false. Every write route that takes a key reads it through
// here, so that all refuse the same keys in the same words.
func IdempotencyKey(w http.ResponseWriter, r *http.Request) (key string, ok bool) {
	values := r.Header.Values(IdempotencyHeader)
	if len(values) == 0 {
		return "", true
	}
	bad := func(msg string) (string, bool) {
		WriteErrorCode(w, http.StatusBadRequest, CodeBadIdempotencyKey, msg)
		return "", false
	}
	if len(values) > 1 {
		return bad("give one Idempotency-Key header, not several")
	}
	key = values[0]
	if key == "" || len(key) > maxIdempotencyKey {
		return bad("Idempotency-Key must hold 1 to 255 bytes")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return bad("Idempotency-Key must be printable ASCII")
		}
	}
	return key, true
}

// memo remembers the answers to keyed requests of this instance, so that
// a retry is answered as the first request was, even on a layer that
// does not drop a keyed send it has seen, and so that a key reused with
// another body is told apart from a retry. Answers that invite a retry
// (5xx, 429) are not kept: the retry is tried again.
type memo struct {
	mu      sync.Mutex
	entries map[string]*memoEntry
	order   []string // keys, oldest first
}

type memoEntry struct {
	hash [sha256.Size]byte
	at   time.Time
	done chan struct{} // closed once the first request has its answer

	// Set before done is closed; a zero status means the answer was not
	// kept and the entry is gone.
	status int
	header http.Header
	body   []byte
}

func newMemo() *memo { return &memo{entries: make(map[string]*memoEntry)} }

// do answers a request with key and body: the first with answer, whose
// answer it records; a retry with the first one's answer, once it is
// known; a request with the same key and another body with 422.
func (m *memo) do(w http.ResponseWriter, r *http.Request, key string, body []byte, answer func(http.ResponseWriter)) {
	hash := sha256.Sum256(body)
	for {
		e, first := m.begin(key, hash)
		if first {
			rec := &recorder{header: make(http.Header)}
			answer(rec)
			m.finish(key, e, rec)
			writeAnswer(w, rec.header, rec.status, rec.body.Bytes(), false)
			return
		}
		if e.hash != hash {
			WriteErrorCode(w, http.StatusUnprocessableEntity, CodeIdempotencyKeyReuse,
				"this Idempotency-Key was used for a request with another body; use a new key for a new request")
			return
		}
		select {
		case <-e.done:
		case <-r.Context().Done():
			return // the client left
		}
		if e.status != 0 {
			writeAnswer(w, e.header, e.status, e.body, true)
			return
		}
		// The first attempt's answer invited a retry: this is it.
	}
}

// begin returns the entry of key, and whether it is new, and so the
// caller's to answer.
func (m *memo) begin(key string, hash [sha256.Size]byte) (e *memoEntry, first bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	n := 0
	for n < len(m.order) && (len(m.order)-n >= maxMemo || now.Sub(m.entries[m.order[n]].at) >= memoLifetime) {
		delete(m.entries, m.order[n])
		n++
	}
	m.order = m.order[n:]
	if e, ok := m.entries[key]; ok {
		return e, false
	}
	e = &memoEntry{hash: hash, at: now, done: make(chan struct{})}
	m.entries[key] = e
	m.order = append(m.order, key)
	return e, true
}

// finish records the answer of e's first request, or forgets e if the
// answer invites a retry, and wakes the retries waiting on it.
func (m *memo) finish(key string, e *memoEntry, rec *recorder) {
	m.mu.Lock()
	if rec.status < 500 && rec.status != http.StatusTooManyRequests {
		e.status, e.header, e.body = rec.status, rec.header.Clone(), bytes.Clone(rec.body.Bytes())
	} else if m.entries[key] == e {
		delete(m.entries, key)
		for i, k := range m.order {
			if k == key {
				m.order = append(m.order[:i], m.order[i+1:]...)
				break
			}
		}
	}
	m.mu.Unlock()
	close(e.done)
}

// recorder keeps an answer so that it can be recorded and then sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// writeAnswer sends a recorded answer to w, marked as a replay if
// replayed.
func writeAnswer(w http.ResponseWriter, header http.Header, status int, body []byte, replayed bool) {
	for k, v := range header {
		w.Header()[k] = v
	}
	if replayed {
		w.Header().Set(ReplayedHeader, "true")
	}
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// layerKey is the idempotency key an API send hands the layer for the
// scoped request key key. The layer records keys per destination and
// bounds their length (channellayer.MaxKeyLength), while a client's key
// may be 255 bytes: a key that does not fit goes as its SHA-256. The
// "api:" prefix keeps a client's key apart from the keys Herald's own
// producers use for the same group (a post's "post:<group>:<id>").
func layerKey(key string) string {
	k := "api:" + key
	if len(k) <= channellayer.MaxKeyLength {
		return k
	}
	sum := sha256.Sum256([]byte(key))
	return "api:sha256:" + hex.EncodeToString(sum[:])
}
