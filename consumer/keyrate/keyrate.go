// Package keyrate keeps one token bucket (golang.org/x/time/rate) per key,
// such as a client address, with a bounded number of keys.
package keyrate

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is the number of keys a Limiter keeps buckets for when
// MaxKeys is not set.
const DefaultMaxKeys = 100_000

// Limiter allows each key Rate events per second on average and Burst at
// once. A bucket left idle until it is full again is the same as a new
// one, so such buckets are dropped (checked at most once a second, on the
// way through Allow): memory follows the keys active in the last few
// seconds, not every key ever seen. When MaxKeys keys are active at once,
// the keys beyond them share one overflow bucket: a flood of new
// addresses limits itself, not the addresses already known. The zero
// value is not usable; make one with New.
type Limiter struct {
	rate  rate.Limit
	burst int
	max   int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	overflow  *rate.Limiter
	lastSweep time.Time
}

// New returns a Limiter of r events per second and burst, for at most
// maxKeys keys (DefaultMaxKeys if maxKeys <= 0). A burst below 1 is 1.
func New(r float64, burst, maxKeys int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &Limiter{
		rate: rate.Limit(r), burst: burst, max: maxKeys,
		buckets:  make(map[string]*rate.Limiter),
		overflow: rate.NewLimiter(rate.Limit(r), burst),
	}
}

// Allow takes one token from key's bucket. When there is none it returns
// false and how long until there is one.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	return l.AllowAt(key, time.Now())
}

// AllowAt is Allow at the time now.
func (l *Limiter) AllowAt(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= time.Second {
		l.sweep(now)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		if len(l.buckets) >= l.max {
			b = l.overflow
		} else {
			b = rate.NewLimiter(l.rate, l.burst)
			l.buckets[key] = b
		}
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops the buckets that are full again.
func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	full := float64(l.burst)
	for k, b := range l.buckets {
		if b.TokensAt(now) >= full {
			delete(l.buckets, k)
		}
	}
}

// Len returns the number of keys that have a bucket now.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// RetryAfter is d in whole seconds, rounded up, at least 1 and at most a
// day, for a Retry-After header.
func RetryAfter(d time.Duration) int {
	if d > 24*time.Hour {
		return 86400
	}
	return max(1, int(math.Ceil(d.Seconds())))
}
