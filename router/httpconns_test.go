package router_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/router"
)

// serveCounted serves h on a loopback listener limited by hc.
func serveCounted(t *testing.T, hc *router.HTTPConns, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: hc.ConnContext, ConnState: hc.ConnState}
	go srv.Serve(hc.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// request sends GET path on c and returns the answer's status and body.
func request(t *testing.T, c net.Conn, br *bufio.Reader, path string) (int, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

func waitOpen(t *testing.T, hc *router.HTTPConns, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for hc.Stats().Open != want {
		if time.Now().After(deadline) {
			t.Fatalf("open %d, want %d", hc.Stats().Open, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHTTPConnsHandoff: a connection handed off stops counting while it
// is away, comes back when an event stream ends, and never comes back
// once hijacked.
func TestHTTPConnsHandoff(t *testing.T) {
	hc := &router.HTTPConns{}
	var during atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		done := hc.Handoff(r)
		during.Store(hc.Stats().Open)
		done()
		done() // twice is once
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		done := hc.Handoff(r)
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		done() // hijacked: stays away
		during.Store(hc.Stats().Open)
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		brw.Flush()
		c.Close()
	})
	addr := serveCounted(t, hc, mux)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	request(t, c, br, "/plain")
	waitOpen(t, hc, 1)
	request(t, c, br, "/stream")
	if d := during.Load(); d != 0 {
		t.Errorf("open %d during the stream, want 0", d)
	}
	waitOpen(t, hc, 1) // kept alive after the stream: plain again
	request(t, c, br, "/hijack")
	if d := during.Load(); d != 0 {
		t.Errorf("open %d after the hijack, want 0", d)
	}
	waitOpen(t, hc, 0)
	c.Close()
	waitOpen(t, hc, 0)
	if st := hc.Stats(); st.Accepted != 1 {
		t.Errorf("accepted %d, want 1", st.Accepted)
	}
}

// TestHTTPConnsLimits: past MaxPerAddr a connection gets 429 and is
// closed; an exempt address is held only to Max, past which it gets 503.
func TestHTTPConnsLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hc     *router.HTTPConns
		served int
		status int
	}{
		{"per address", &router.HTTPConns{Max: 10, MaxPerAddr: 3}, 3, http.StatusTooManyRequests},
		{"exempt", &router.HTTPConns{Max: 5, MaxPerAddr: 3, Exempt: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, 5, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveCounted(t, tc.hc, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			for i := 0; i < tc.served; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if st, _ := request(t, c, bufio.NewReader(c), "/"); st != http.StatusOK {
					t.Fatalf("connection %d: %d", i, st)
				}
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Read before writing, so that the answer is not lost to a reset.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "too_many_connections") {
				t.Errorf("refused with %d %q %s", resp.StatusCode, resp.Header, b)
			}
			st := tc.hc.Stats()
			if st.Open != int64(tc.served) || st.RefusedMax+st.RefusedPerAddr != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
