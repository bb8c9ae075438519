package router

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientAddr returns a function that names the client of a request: the
// connection's remote address, or, when that is one of the trusted
// proxies, the nearest untrusted address in X-Forwarded-For. Without
// trusted proxies the header is ignored, since any client can write it.
func ClientAddr(trusted []netip.Prefix) func(*http.Request) string {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !isTrusted(addr) {
			return host
		}
		// Walk the header from the right: the last hop was added by the
		// trusted proxy in front of us.
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				return host // a malformed header: trust none of it
			}
			if !isTrusted(a) {
				return a.Unmap().String()
			}
		}
		return host
	}
}
