package router

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// DefaultIPv6Prefix is the number of leading bits of an IPv6 address
// that name a client for ClientAddr: a /64 is what one subscriber, host
// or LAN is usually given, so a client cannot get fresh buckets by
// changing the low bits of its address.
const DefaultIPv6Prefix = 64

// ClientAddr returns a function that names the client of a request, for
// per-address limits and logs, grouping IPv6 addresses by their
// DefaultIPv6Prefix: see ClientAddrPrefix.
func ClientAddr(trusted []netip.Prefix) func(*http.Request) string {
	return ClientAddrPrefix(trusted, DefaultIPv6Prefix)
}

// ClientAddrPrefix returns a function that names the client of a
// request: the connection's remote address, or, when that is one of the
// trusted proxies, the nearest untrusted address in X-Forwarded-For,
// walked from the right (the last entry is the one the proxy in front of
// us added). Without trusted proxies the header is ignored, since any
// client can write it; no other header (Forwarded, X-Real-IP) is ever
// read. An entry may be an address ("192.0.2.1", "2001:db8::1") or an
// address with a port ("192.0.2.1:4711", "[2001:db8::1]:4711"), as some
// proxies write it; an entry that is neither makes the whole header
// untrusted, and the client is the proxy.
//
// An IPv4 address (or an IPv4-mapped IPv6 one) names the client by
// itself. An IPv6 address is cut to its first v6bits bits (32 to 128;
// anything else is DefaultIPv6Prefix) and named as that network, such as
// "2001:db8:1:2::/64"; with 128 it is the address itself.
func ClientAddrPrefix(trusted []netip.Prefix, v6bits int) func(*http.Request) string {
	if v6bits < 32 || v6bits > 128 {
		v6bits = DefaultIPv6Prefix
	}
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	name := func(a netip.Addr) string {
		a = a.Unmap().WithZone("")
		if a.Is4() || v6bits == 128 {
			return a.String()
		}
		p, err := a.Prefix(v6bits)
		if err != nil {
			return a.String()
		}
		return p.String()
	}
	return func(r *http.Request) string {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		addr, err := netip.ParseAddr(host)
		if err != nil {
			return host
		}
		if !isTrusted(addr) {
			return name(addr)
		}
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := parseHop(hops[i])
			if !ok {
				return name(addr) // a malformed header: trust none of it
			}
			if !isTrusted(a) {
				return name(a)
			}
		}
		return name(addr)
	}
}

// parseHop reads one X-Forwarded-For entry: an address, or an address
// and port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a, true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), true
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			if a, err := netip.ParseAddr(inner); err == nil && a.Is6() {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}
