package channellayer

import (
	"sync"
	"time"
)

// maxKeyRecords bounds how many keyed sends a process remembers; past it
// the oldest are forgotten before their window ends.
const maxKeyRecords = 100_000

// keyRecords remembers the result of keyed sends applied in this process
// (the memory layer, and the Redis layers' sends to their own channels),
// for KeyWindow, oldest first out.
type keyRecords struct {
	mu    sync.Mutex
	n     map[string]SendResult // destination and key -> result of the first send
	order []keyRecord           // by time of the first send
	head  int
}

type keyRecord struct {
	key string
	at  time.Time
}

// apply runs send, unless a send with key to dest ran within KeyWindow:
// it then returns what that one returned, and repeated. send runs under
// the records' lock, so that sends racing with one key apply once.
func (r *keyRecords) apply(dest, key string, send func() SendResult) (res SendResult, repeated bool) {
	k := dest + "\x00" + key
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(now)
	if res, ok := r.n[k]; ok {
		return res, true
	}
	res = send()
	if r.n == nil {
		r.n = make(map[string]SendResult)
	}
	r.n[k] = res
	r.order = append(r.order, keyRecord{key: k, at: now})
	return res, false
}

// expireLocked forgets records older than KeyWindow, and the oldest
// beyond maxKeyRecords.
func (r *keyRecords) expireLocked(now time.Time) {
	for r.head < len(r.order) && (now.Sub(r.order[r.head].at) > KeyWindow || len(r.order)-r.head >= maxKeyRecords) {
		delete(r.n, r.order[r.head].key)
		r.order[r.head] = keyRecord{}
		r.head++
	}
	if r.head > len(r.order)/2 && r.head > 1024 {
		r.order = append(r.order[:0:0], r.order[r.head:]...)
		r.head = 0
	}
}

// seen reports whether a send with key to dest is remembered.
func (r *keyRecords) seen(dest, key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(time.Now())
	_, ok := r.n[dest+"\x00"+key]
	return ok
}
