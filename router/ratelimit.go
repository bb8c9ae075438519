package router

import (
	"crypto/subtle"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/consumer/keyrate"
)

// RateLimit is middleware that limits the requests of each client
// address (as ClientAddr names it) with a token bucket: Rate requests per
// second on average and Burst at once. A request over the limit is
// answered 429 with a Retry-After header (whole seconds, at least 1) and
// the JSON body {"error": "...", "code": "rate_limited"}, and does not
// reach the handler.
//
// A request that presents Token as "Authorization: Bearer <Token>" is
// not limited: it comes from a backend trusted with the API token, whose
// sends are the server's purpose; guard the token instead. Without a
// Token every request is limited.
//
// The buckets of addresses idle long enough to have refilled are
// dropped, so memory follows the addresses active in the last few
// seconds (see keyrate.Limiter); at most MaxKeys addresses have a bucket
// of their own, and the rest share one.
type RateLimit struct {
	// Rate is requests per second per address; 0 or less turns the limit
	// off.
	Rate float64
	// Burst is the requests an address may make at once. Default
	// 2*Rate, at least 1.
	Burst int
	// Token, when set, exempts the requests that present it.
	Token string
	// ClientAddr names the client of a request. Default: the host of
	// r.RemoteAddr, IPv6 grouped by /64 (ClientAddr(nil)).
	ClientAddr func(*http.Request) string
	// MaxKeys bounds the addresses with a bucket of their own. Default
	// keyrate.DefaultMaxKeys.
	MaxKeys int
	// Refused, when set, is called with the reason ("rate_limited") of
	// each refused request, for metrics (Metrics.Refused).
	Refused func(reason string)

	lim *keyrate.Limiter
}

// Handler returns next behind the limit. Call it after setting the
// fields; every handler it returns shares one set of buckets.
func (l *RateLimit) Handler(next http.Handler) http.Handler {
	if l == nil || l.Rate <= 0 {
		return next
	}
	if l.lim == nil {
		burst := l.Burst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(2*l.Rate)))
		}
		l.lim = keyrate.New(l.Rate, burst, l.MaxKeys)
	}
	addr := l.ClientAddr
	if addr == nil {
		addr = ClientAddr(nil)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if ok && subtle.ConstantTimeCompare([]byte(got), []byte(l.Token)) == 1 {
				next.ServeHTTP(w, r)
				return
			}
		}
		ok, wait := l.lim.Allow(addr(r))
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		if l.Refused != nil {
			l.Refused("rate_limited")
		}
		w.Header().Set("Retry-After", strconv.Itoa(keyrate.RetryAfter(wait)))
		WriteJSON(w, http.StatusTooManyRequests, ErrorBody{
			Error: fmt.Sprintf("too many requests from your address (more than %g a second); retry later", l.Rate),
			Code:  "rate_limited",
		})
	})
}

// Len returns the number of addresses that have a bucket now.
func (l *RateLimit) Len() int {
	if l == nil || l.lim == nil {
		return 0
	}
	return l.lim.Len()
}
