package router_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/router"
	"github.com/heraldhq/herald/router/routertest"
)

// request sends method path with body and the headers (name, value
// pairs; "Host" sets the request's Host), and returns the status and the
// error body's code.
func (e *env) request(method, path, body string, header ...string) (int, string) {
	e.t.Helper()
	status, b, h := routertest.Do(e.t, method, e.srv.URL+path, body, header...)
	var eb router.ErrorBody
	_ = json.Unmarshal([]byte(b), &eb)
	if status >= 400 && (eb.Error == "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json")) {
		e.t.Errorf("%s %s: %d with body %q, want a JSON error", method, path, status, b)
	}
	return status, eb.Code
}

// dialAs opens a WebSocket to path as a browser that resolved host to
// this server would: the URL, and so the Host header, name host; the
// connection goes to the test server.
func (e *env) dialAs(host, path string, header http.Header) (*websocket.Conn, *http.Response, error) {
	addr := e.srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+net.JoinHostPort(host, port)+path, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header})
	if c != nil {
		e.t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// TestCrossSiteWritesRefused: the writes a page on another site can make
// without a CORS preflight (text/plain, form and multipart bodies), and
// any write from a foreign Origin, are refused before they reach the API;
// a listener never sees them. Writes from this server's page, from an
// allowed origin and from backends (no Origin) go through.
func TestCrossSiteWritesRefused(t *testing.T) {
	e := newEnvWith(t, channellayer.NewMemory(), "", func(_ *router.Router, conns *consumer.Server) {
		conns.OriginPatterns = []string{"app.example.com", "*.example.org"}
	})
	c := e.mustDial("/notifications/")
	self := strings.TrimPrefix(e.srv.URL, "http://")
	send := `{"type":"name.gossip","message":"forged"}`

	for _, path := range []string{"/api/groups/gossip/send", "/api/channels/x/send"} {
		body := send
		for _, tc := range routertest.CrossSiteWrites(self) {
			if status, code := e.request("POST", path, body, tc.Header...); status != tc.Status || code != tc.Code {
				t.Errorf("POST %s, %s: %d %q, want %d %q", path, tc.Name, status, code, tc.Status, tc.Code)
			}
		}
		for _, method := range []string{"PUT", "DELETE", "PATCH"} {
			if status, code := e.request(method, path, body, "Content-Type", "text/plain", "Origin", "http://evil.com"); status != 403 || code != "cross_site" {
				t.Errorf("%s %s from a foreign origin: %d %q, want 403", method, path, status, code)
			}
		}
	}

	for _, tc := range routertest.AllowedWrites(self) {
		if status, code := e.request("POST", "/api/groups/gossip/send", `{"type":"name.gossip","message":"ok"}`, tc.Header...); status != http.StatusAccepted {
			t.Errorf("send, %s: %d %q, want 202", tc.Name, status, code)
		}
		if got := read(t, c); strings.Contains(got, "forged") || !strings.Contains(got, `"ok"`) {
			t.Fatalf("listener got %s, want the allowed send", got)
		}
	}
	// Reads are not writes: a foreign page may GET (CORS keeps the answer
	// from it).
	if status, _ := e.request("GET", "/healthz", "", "Origin", "http://evil.com", "Sec-Fetch-Site", "cross-site"); status != http.StatusOK {
		t.Errorf("GET /healthz from a foreign origin: %d, want 200", status)
	}
}

// TestAllowedHosts: with AllowedHosts set, a request for any other Host,
// HTTP or WebSocket, is refused before it is served; this is what keeps
// out a page that reached a loopback server through DNS rebinding
// (its Host and Origin both name its own site, so they agree).
func TestAllowedHosts(t *testing.T) {
	e := newEnvWith(t, channellayer.NewMemory(), "", func(rt *router.Router, _ *consumer.Server) {
		rt.AllowedHosts = append([]string{"herald.example.com"}, router.LoopbackHosts...)
	})
	rebound := http.Header{"Origin": {"http://" + hostPort(e, "evil.example")}}

	// DNS rebinding: the page at evil.example now resolves to 127.0.0.1.
	if _, resp, err := e.dialAs("evil.example", "/notifications/", rebound); err == nil || resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("WebSocket with Host and Origin evil.example: %v %v, want 421", err, resp)
	}
	for _, method := range []string{"GET", "POST"} {
		for _, path := range []string{"/api/groups/gossip/send", "/healthz"} {
			status, code := e.request(method, path, `{"type":"name.gossip","message":"forged"}`,
				"Host", "evil.example", "Origin", "http://evil.example", "Content-Type", "application/json")
			if status != http.StatusMisdirectedRequest || code != "host_not_allowed" {
				t.Errorf("%s %s for Host evil.example: %d %q, want 421 host_not_allowed", method, path, status, code)
			}
		}
	}
	for _, host := range []string{"evil.example:80", "localhost.evil.example", "127.0.0.1.evil.example", "10.0.0.1"} {
		if status, _ := e.request("GET", "/healthz", "", "Host", host); status != http.StatusMisdirectedRequest {
			t.Errorf("Host %q: %d, want 421", host, status)
		}
	}

	// The allowed names still work, for WebSockets and writes.
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "herald.example.com"} {
		origin := http.Header{"Origin": {"http://" + hostPort(e, host)}}
		if _, resp, err := e.dialAs(host, "/notifications/", origin); err != nil {
			t.Errorf("WebSocket for Host %s: %v %v", host, err, resp)
		}
	}
	c := e.mustDial("/notifications/")
	status, code := e.request("POST", "/api/groups/gossip/send", `{"type":"name.gossip","message":"ok"}`,
		"Host", hostPort(e, "localhost"), "Origin", "http://"+hostPort(e, "localhost"), "Content-Type", "application/json")
	if status != http.StatusAccepted {
		t.Fatalf("same-origin send for Host localhost: %d %q", status, code)
	}
	if got := read(t, c); !strings.Contains(got, `"ok"`) {
		t.Fatalf("listener got %s", got)
	}
	// The "own host" of the Origin check is an allowed one: a page on an
	// allowed host is not thereby trusted by another.
	if status, code := e.request("POST", "/api/groups/gossip/send", `{"type":"name.gossip","message":"forged"}`,
		"Host", "herald.example.com", "Origin", "http://localhost", "Content-Type", "application/json"); status != http.StatusForbidden {
		t.Errorf("Host herald.example.com, Origin localhost: %d %q, want 403", status, code)
	}
}

// TestHostsUnrestricted: without AllowedHosts any Host is served, as
// before; the rebinding case is then open, which is why the server
// restricts Hosts by default when bound to loopback.
func TestHostsUnrestricted(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	if _, resp, err := e.dialAs("evil.example", "/notifications/", http.Header{"Origin": {"http://" + hostPort(e, "evil.example")}}); err != nil {
		t.Fatalf("unrestricted: %v %v", err, resp)
	}
}

func hostPort(e *env, host string) string {
	_, port, _ := net.SplitHostPort(e.srv.Listener.Addr().String())
	return net.JoinHostPort(host, port)
}

func TestHostAllowed(t *testing.T) {
	patterns := []string{"localhost", "127.0.0.1", "[::1]", "*.example.com", "api.example.org:443", "FD00::1"}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:8000", true},
		{"LOCALHOST:1", true},
		{"localhost.", true},
		{"127.0.0.1:8000", true},
		{"[::1]:8000", true},
		{"[::1]", true},
		{"::1", true},
		{"a.example.com", true},
		{"a.b.example.com:9", true}, // path.Match: * stops at '/', not '.'
		{"example.com", false},
		{"api.example.org:443", true},
		{"api.example.org", false},
		{"api.example.org:80", false},
		{"[fd00::1]:80", true},
		{"", false},
		{":8000", false},
		{"evil.example", false},
		{"localhost.evil.example", false},
		{"127.0.0.2", false},
		{"[::1", false},
		{"[::1]x", false},
	} {
		if got := router.HostAllowed(tc.host, patterns); got != tc.want {
			t.Errorf("HostAllowed(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
	if !router.HostAllowed("anything.at.all:1", []string{"*"}) {
		t.Error(`"*" does not allow every host`)
	}
	for p, want := range map[string]bool{"localhost": true, "*.example.com": true, "[::1]:80": true, "[": false, "a[": false, "": false, ":80": false} {
		if got := router.ValidHostPattern(p); got != want {
			t.Errorf("ValidHostPattern(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8000":       true,
		"127.0.0.2:0":          true,
		"[::1]:8000":           true,
		"localhost:8000":       true,
		"LocalHost:1":          true,
		":8000":                false,
		"0.0.0.0:8000":         false,
		"[::]:8000":            false,
		"192.168.1.5:8000":     false,
		"herald.lan:8000":      false,
		"[::ffff:127.0.0.1]:1": true,
	} {
		if got := router.IsLoopbackAddr(addr); got != want {
			t.Errorf("IsLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
