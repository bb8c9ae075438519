package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// shortPlainTimeouts makes every plain HTTP timeout 300 ms.
var shortPlainTimeouts = []string{
	"HERALD_HANDSHAKE_TIMEOUT=300ms", "HERALD_IDLE_TIMEOUT=300ms",
	"HERALD_READ_TIMEOUT=300ms", "HERALD_WRITE_TIMEOUT=300ms",
}

// dialFrom dials addr from the loopback address local (such as
// 127.0.0.2), to stand for another client. It skips t where the system
// does not allow it.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("cannot dial from %s: %v", local, err)
		}
		t.Fatal(err)
	}
	return c
}

// keptAlive sends one whole request on c and reads its answer, leaving
// the connection kept alive. It returns the status.
func keptAlive(c net.Conn, br *bufio.Reader) (int, error) {
	_ = c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closedWithin reads c until the server closes it, and fails if that
// takes longer than d. It returns what it read and how long it took.
func closedWithin(c net.Conn, br *bufio.Reader, d time.Duration) (string, time.Duration, error) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	b, err := io.ReadAll(br)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return string(b), took, fmt.Errorf("still open after %v (read %q)", d, b)
	}
	return string(b), took, nil // EOF, or a reset: closed either way
}

// trickle writes head to c a byte every d, then one more byte every d
// for ever, until a write fails.
func trickle(c net.Conn, head string, d time.Duration) {
	for i := 0; ; i++ {
		b := "a"
		if i < len(head) {
			b = head[i : i+1]
		}
		_ = c.SetWriteDeadline(time.Now().Add(wait))
		if _, err := io.WriteString(c, b); err != nil {
			return
		}
		time.Sleep(d)
	}
}

// TestKeptAliveConnectionsTimeOut: an idle keep-alive, one that sends
// three bytes of its next request (the HTTP server waits for four before
// it starts the header timeout), and one that trickles its next request's
// headers are all closed within the timeouts.
func TestKeptAliveConnectionsTimeOut(t *testing.T) {
	t.Parallel()
	in := startHerald(t, shortPlainTimeouts...)
	for _, tc := range []struct {
		name string
		then func(c net.Conn) // after the first request
	}{
		{"idle", func(net.Conn) {}},
		{"three bytes of the next request", func(c net.Conn) { _, _ = io.WriteString(c, "GET") }},
		{"next request trickled from its first byte", func(c net.Conn) {
			go trickle(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", 50*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", in.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			if st, err := keptAlive(c, br); err != nil || st != http.StatusOK {
				t.Fatalf("first request: %d %v", st, err)
			}
			tc.then(c)
			// At most the idle timeout, then the header timeout: 600 ms.
			got, took, err := closedWithin(c, br, 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// Nothing, or a 400 when the deadline cut the request line or
			// a header name (the server then reads it as malformed).
			if got != "" && !strings.HasPrefix(got, "HTTP/1.1 400 ") {
				t.Errorf("got %q before the close, want nothing or a 400", got)
			}
			if took < 200*time.Millisecond {
				t.Errorf("closed after %v, before the idle timeout (300ms)", took)
			}
		})
	}
}

// TestTrickledBodyGets408: a body that trickles in, a byte every 100 ms,
// is answered 408 and its connection closed within the read timeout, on
// both routes that read one.
func TestTrickledBodyGets408(t *testing.T) {
	t.Parallel()
	in := startHerald(t, shortPlainTimeouts...)
	for _, path := range []string{"/posts", "/api/groups/gossip/send"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", in.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", path)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := io.WriteString(c, " "); err != nil {
						return
					}
				}
			}()
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer within 3s of a body trickled for a 300ms read timeout: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("got %d %s, want 408", resp.StatusCode, body)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("answered after %v", took)
			}
			if _, _, err := closedWithin(c, br, 2*time.Second); err != nil {
				t.Errorf("after the 408: %v", err)
			}
		})
	}
}

// metricsAddrRE finds the address of /metrics in the listening line.
var metricsAddrRE = regexp.MustCompile(`metrics=(\d\S+)`)

// scrape reads /metrics at addr (host:port), on a connection of its own,
// and returns the value of each sample, by its name and labels as
// written.
func scrape(t *testing.T, addr, token string) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: wait}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	samples := map[string]float64{}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err == nil {
			samples[name] = f
		}
	}
	return samples
}

// TestPlainConnectionLimits opens idle keep-alives from several loopback
// addresses: past HERALD_MAX_HTTP_CONNECTIONS_PER_ADDR from one address
// they are refused (429) while other addresses are served, a trusted
// proxy is not held to it, past HERALD_MAX_HTTP_CONNECTIONS everyone is
// refused (503), and /metrics, on its own address, counts them all.
func TestPlainConnectionLimits(t *testing.T) {
	t.Parallel()
	const perAddr, max = 20, 50
	in := startHerald(t, "HERALD_MAX_HTTP_CONNECTIONS_PER_ADDR="+strconv.Itoa(perAddr), "HERALD_MAX_HTTP_CONNECTIONS="+strconv.Itoa(max),
		"HERALD_TRUSTED_PROXIES=127.0.0.3", "HERALD_METRICS_ADDR=127.0.0.1:0")
	m := metricsAddrRE.FindStringSubmatch(in.log.String())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", in.log)
	}
	metricsAddr := m[1]
	if st := status("http://" + in.addr + "/metrics"); st != http.StatusNotFound {
		t.Errorf("/metrics on the main address with HERALD_METRICS_ADDR set: %d, want 404", st)
	}

	var open []net.Conn
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	// hold opens n kept-alive connections from local, each served.
	hold := func(local string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			c := dialFrom(t, local, in.addr)
			open = append(open, c)
			if st, err := keptAlive(c, bufio.NewReader(c)); err != nil || st != http.StatusOK {
				t.Fatalf("connection %d from %s: %d %v", i, local, st, err)
			}
		}
	}
	// refused checks that one more connection from local is refused with
	// want, or at least closed at once without being served.
	refused := func(local string, want int) {
		t.Helper()
		c := dialFrom(t, local, in.addr)
		defer c.Close()
		st, err := keptAlive(c, bufio.NewReader(c))
		switch {
		case err == nil && st != want:
			t.Errorf("connection past the limit from %s: %d, want %d", local, st, want)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
			t.Errorf("connection past the limit from %s: neither answered nor closed: %v", local, err)
		}
	}

	hold("127.0.0.1", perAddr)
	refused("127.0.0.1", http.StatusTooManyRequests)
	hold("127.0.0.2", 5) // another address is served meanwhile
	hold("127.0.0.3", perAddr+5)
	hold("127.0.0.4", max-2*perAddr-10)
	refused("127.0.0.5", http.StatusServiceUnavailable)

	s := scrape(t, metricsAddr, "")
	for name, want := range map[string]float64{
		"herald_http_connections_open":                            max,
		`herald_http_connections_refused_total{limit="addr"}`:     1,
		`herald_http_connections_refused_total{limit="instance"}`: 1,
	} {
		if s[name] != want {
			t.Errorf("%s %v, want %v", name, s[name], want)
		}
	}

	for _, c := range open {
		c.Close()
	}
	open = nil
	deadline := time.Now().Add(wait)
	for scrape(t, metricsAddr, "")["herald_http_connections_open"] != 0 {
		if time.Now().After(deadline) {
			t.Fatal("closed connections still counted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hold("127.0.0.1", 1) // room again
}

// TestMetricsNeedAPIToken: on the main address, /metrics is behind the
// API token when one is set.
func TestMetricsNeedAPIToken(t *testing.T) {
	t.Parallel()
	in := startHerald(t, "HERALD_API_TOKEN=s3cret-token-for-the-test")
	if st := status("http://" + in.addr + "/metrics"); st != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", st)
	}
	if s := scrape(t, in.addr, "s3cret-token-for-the-test"); len(s) == 0 {
		t.Error("/metrics with the token: no samples")
	}
}

// TestStreamsOutlivePlainTimeouts: with every plain HTTP timeout at
// 300 ms and pings far off, a WebSocket and an event stream stay open
// for several times that and still receive a message, while a plain
// keep-alive opened beside them is closed; the streams count as the
// consumers' connections, not as plain ones.
func TestStreamsOutlivePlainTimeouts(t *testing.T) {
	t.Parallel()
	in := startHerald(t, shortPlainTimeouts...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()

	ws := dialNotifications(t, in.addr)
	sse, err := dialResumeSSE(ctx, in.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sse.kill()
	plain, err := net.Dial("tcp", in.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	br := bufio.NewReader(plain)
	if st, err := keptAlive(plain, br); err != nil || st != http.StatusOK {
		t.Fatalf("plain request: %d %v", st, err)
	}

	// The plain keep-alive, made after the streams, is closed by its
	// timeouts: theirs have passed too.
	if _, _, err := closedWithin(plain, br, wait); err != nil {
		t.Errorf("plain keep-alive after its answer: %v", err)
	}
	s := scrape(t, in.addr, "")
	if got := s["herald_http_connections_open"]; got != 1 { // the scrape's own
		t.Errorf("herald_http_connections_open %v with a WebSocket and a stream open, want 1 (the scrape)", got)
	}
	if got := s[`herald_connections_open{route="/notifications/"}`]; got != 2 {
		t.Errorf("herald_connections_open %v, want 2", got)
	}

	if st := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","text":"still here"}`); st != http.StatusAccepted {
		t.Fatalf("send: %d", st)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			_, data, err := ws.conn.Read(ctx)
			if err != nil {
				t.Errorf("WebSocket: %v", err)
				return
			}
			if strings.Contains(string(data), "name.gossip") {
				if !strings.Contains(string(data), "still here") {
					t.Errorf("WebSocket got %s", data)
				}
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		data, _, err := sse.next(ctx)
		if err != nil {
			t.Errorf("event stream: %v", err)
			return
		}
		if !strings.Contains(string(data), "still here") {
			t.Errorf("event stream got %s", data)
		}
	}()
	wg.Wait()
}
