package router

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/consumer"
)

// LoopbackHosts are the Host names of a loopback-bound server (on any
// port): what a Router restricted to this machine's own browsers allows.
var LoopbackHosts = []string{"localhost", "127.0.0.1", "[::1]"}

// checkHost answers 421 and returns false when the router restricts Hosts
// and r's is not on the list. A page that reaches Herald through DNS
// rebinding sends its own site's name as Host, so this is what keeps it
// out; it also makes the Host that the Origin checks compare with one
// that the operator listed, not one the client chose.
func (rt *Router) checkHost(w http.ResponseWriter, r *http.Request) bool {
	if rt.AllowedHosts == nil || HostAllowed(r.Host, rt.AllowedHosts) {
		return true
	}
	rt.log.Info("router: request for a host not allowed refused", "host", r.Host)
	WriteJSON(w, http.StatusMisdirectedRequest, ErrorBody{
		Error: "this server does not answer for host " + quoteHost(r.Host) + " (see HERALD_ALLOWED_HOSTS)",
		Code:  CodeHostNotAllowed,
	})
	return false
}

// checkWrite guards the state-changing HTTP requests (any method but GET,
// HEAD and OPTIONS) against cross-site forgery, with the rule WebSocket
// upgrades follow (consumer.OriginAllowed, with the consumers'
// OriginPatterns): a request whose Origin is foreign is answered 403, as
// is one that a browser marks cross-site or same-site (Sec-Fetch-Site)
// without saying from where; and a body that is not application/json is
// answered 415, since a page can send text/plain, form or multipart
// bodies to any site without asking (no CORS preflight) but not JSON.
// Clients that are not browsers (curl, backends) send neither Origin nor
// Sec-Fetch-Site and pass, given a JSON body. It returns false when it
// answered.
func (rt *Router) checkWrite(w http.ResponseWriter, r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	var patterns []string
	if rt.consumers != nil {
		patterns = rt.consumers.OriginPatterns
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if !consumer.OriginAllowed(r, patterns) {
			rt.log.Info("router: write from a foreign origin refused", "method", r.Method, "path", r.URL.Path, "origin", origin)
			WriteJSON(w, http.StatusForbidden, ErrorBody{
				Error: "requests from pages at " + quoteHost(origin) + " may not write here (see HERALD_ALLOWED_ORIGINS)",
				Code:  CodeCrossSite,
			})
			return false
		}
	} else if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		rt.log.Info("router: cross-site write without an Origin refused", "method", r.Method, "path", r.URL.Path, "sec_fetch_site", site)
		WriteJSON(w, http.StatusForbidden, ErrorBody{
			Error: "a " + quoteHost(site) + " request from a browser may not write here",
			Code:  CodeCrossSite,
		})
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		w.Header().Set("Accept-Post", "application/json")
		WriteJSON(w, http.StatusUnsupportedMediaType, ErrorBody{
			Error: "the body must be JSON, sent with Content-Type: application/json",
			Code:  CodeJSONRequired,
		})
		return false
	}
	return true
}

// HostAllowed reports whether host, a Host header (a name or address,
// with or without a port), matches one of patterns. A pattern is a host
// name or address in path.Match syntax ("herald.example.com",
// "*.example.com", "10.0.0.7", "[::1]"), matched without regard to case
// or a trailing dot, on any port; a pattern with a port ("example.com:443")
// matches that port only. "*" matches every host.
func HostAllowed(host string, patterns []string) bool {
	name, port := splitHost(host)
	if name == "" {
		return false
	}
	for _, p := range patterns {
		pname, pport := splitHost(p)
		if pport != "" && pport != port {
			continue
		}
		if ok, _ := path.Match(pname, name); ok {
			return true
		}
	}
	return false
}

// ValidHostPattern reports whether p can be used as a HostAllowed
// pattern.
func ValidHostPattern(p string) bool {
	name, _ := splitHost(p)
	if name == "" {
		return false
	}
	_, err := path.Match(name, "")
	return err == nil
}

// splitHost splits a Host header or host pattern into its lower-case
// name, without brackets or a trailing dot, and its port, if any.
func splitHost(h string) (name, port string) {
	h = strings.ToLower(strings.TrimSpace(h))
	switch {
	case strings.HasPrefix(h, "["): // [v6] or [v6]:port
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", ""
		}
		name, rest := h[1:end], h[end+1:]
		if rest != "" {
			var ok bool
			if port, ok = strings.CutPrefix(rest, ":"); !ok {
				return "", ""
			}
		}
		return name, port
	case strings.Count(h, ":") > 1: // a bare IPv6 address
		return h, ""
	}
	if n, p, err := net.SplitHostPort(h); err == nil {
		h, port = n, p
	}
	return strings.TrimSuffix(h, "."), port
}

// IsLoopbackAddr reports whether addr (host:port, as a listen address)
// listens on loopback only: its host is "localhost" or a loopback IP
// address. An empty host, 0.0.0.0 and :: listen everywhere.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// quoteHost quotes a client-sent value for an error message, short.
func quoteHost(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}
