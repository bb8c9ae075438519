package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/router/routertest"
)

// TestCrossSiteWritesRefused: forged cross-site writes to POST /posts and
// to the open API (no HERALD_API_TOKEN) are refused with 403 or 415, and
// no browser connected to /notifications/ receives them; the page's own
// same-origin JSON post and a backend's post without Origin still work.
func TestCrossSiteWritesRefused(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	browser := dialNotifications(t, in.addr)

	for _, f := range routertest.CrossSiteWrites(in.addr) {
		for _, w := range []struct{ path, body string }{
			{"/posts", `{"author":"mallory","message":"forged"}`},
			{"/api/groups/gossip/send", `{"type":"name.gossip","sender":"mallory","message":"forged"}`},
		} {
			status, body, _ := routertest.Do(t, http.MethodPost, "http://"+in.addr+w.path, w.body, f.Header...)
			if status != f.Status || !strings.Contains(body, `"code":"`+f.Code+`"`) {
				t.Errorf("POST %s, %s: %d %s, want %d %s", w.path, f.Name, status, body, f.Status, f.Code)
			}
		}
	}

	// The page at Herald's own address posts as web/app.js does.
	status, _, _ := routertest.Do(t, http.MethodPost, "http://"+in.addr+"/posts", `{"author":"ana","message":"same-origin"}`,
		"Content-Type", "application/json", "Accept", "application/json", "Idempotency-Key", "k1",
		"Origin", "http://"+in.addr, "Sec-Fetch-Site", "same-origin")
	if status != http.StatusCreated {
		t.Fatalf("same-origin JSON POST /posts: %d, want 201", status)
	}
	// A backend (curl, Django) sends no Origin.
	if status := in.post(t, "/posts", `{"author":"backend","message":"no origin"}`); status != http.StatusCreated {
		t.Fatalf("backend POST /posts: %d, want 201", status)
	}
	if status := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","sender":"backend","message":"api"}`); status != http.StatusAccepted {
		t.Fatalf("backend send: %d, want 202", status)
	}
	// The browser gets exactly the three, in order: nothing forged came
	// before them.
	for _, want := range []string{"same-origin", "no origin", "api"} {
		got := browser.nextPost()
		if got["message"] != want {
			t.Fatalf("browser got %v, want the message %q", got, want)
		}
	}
}

// rebindingClient reaches addr as a browser whose DNS for host was
// rebound to addr would: URLs, and so the Host header, name host.
func rebindingClient(addr string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}}
}

// TestDNSRebindingRefused: a loopback-bound Herald (the default) answers
// only for localhost, 127.0.0.1 and [::1]. A page at evil.example whose
// name was rebound to 127.0.0.1 sends Host and Origin evil.example, which
// agree, so the Origin check alone lets it in; the Host allow-list keeps
// it out, for WebSockets and HTTP alike.
func TestDNSRebindingRefused(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	_, port, _ := net.SplitHostPort(in.addr)
	evil := net.JoinHostPort("evil.example", port)
	hc := rebindingClient(in.addr)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+evil+"/notifications/", &websocket.DialOptions{
		HTTPClient: hc, HTTPHeader: http.Header{"Origin": {"http://" + evil}},
	})
	if err == nil {
		c.CloseNow()
		t.Fatal("WebSocket with Host and Origin evil.example was upgraded")
	}
	if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("WebSocket with Host evil.example: %v %v, want 421", err, resp)
	}

	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/", ""},
		{"GET", "/posts", ""},
		{"POST", "/posts", `{"author":"mallory","message":"rebound"}`},
		{"POST", "/api/groups/gossip/send", `{"type":"name.gossip","message":"rebound"}`},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+evil+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Origin", "http://"+evil)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(b), "host_not_allowed") {
			t.Errorf("%s %s with Host evil.example: %d %s, want 421 host_not_allowed", tc.method, tc.path, resp.StatusCode, b)
		}
	}

	// The same page served from localhost is this server's own.
	local := net.JoinHostPort("localhost", port)
	c, _, err = websocket.Dial(ctx, "ws://"+local+"/notifications/", &websocket.DialOptions{
		HTTPClient: hc, HTTPHeader: http.Header{"Origin": {"http://" + local}},
	})
	if err != nil {
		t.Fatalf("WebSocket with Host and Origin localhost: %v", err)
	}
	c.CloseNow()
}

// TestPublicBindNeedsAPIToken: bound to an address others can reach with
// no HERALD_API_TOKEN, Herald refuses to start, naming the token and
// HERALD_API_INSECURE; with HERALD_API_INSECURE=true it starts and says
// at start that the API is open. It only decides at start: the test
// sends nothing to the public address and stops the server at once.
func TestPublicBindNeedsAPIToken(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBinary, "-addr", "0.0.0.0:0")
	cmd.Env = append(os.Environ(), "REDIS_URL=", "DATABASE_URL=", "HERALD_API_TOKEN=", "HERALD_API_INSECURE=")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Errorf("public bind without a token: exit %v, want 2; output:\n%s", err, out)
	}
	for _, want := range []string{"HERALD_API_TOKEN", "HERALD_API_INSECURE=true", "0.0.0.0:0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("public bind without a token: message does not name %s: %s", want, out)
		}
	}
	if strings.Contains(string(out), "herald listening") {
		t.Errorf("public bind without a token listened: %s", out)
	}

	in := startHerald(t, "HERALD_ADDR=0.0.0.0:0", "HERALD_API_INSECURE=true")
	if err := in.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for !strings.Contains(in.log.String(), "herald stopped") {
		if time.Now().After(deadline) {
			t.Fatalf("insecure public instance did not stop:\n%s", in.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	log := in.log.String()
	if !strings.Contains(log, `api="OPEN to the network`) || !strings.Contains(log, "level=WARN") || !strings.Contains(log, "the API is open") {
		t.Errorf("insecure public instance did not log that its API is open:\n%s", log)
	}
}

// TestStartLogSaysAPIProtection: the start-up line says whether the API
// is protected.
func TestStartLogSaysAPIProtection(t *testing.T) {
	t.Parallel()
	open := startHerald(t)
	closed := startHerald(t, "HERALD_API_TOKEN=s3cret-s3cret")
	for _, tc := range []struct {
		in   *instance
		want string
	}{{open, `api="open, on loopback only`}, {closed, `api="protected by HERALD_API_TOKEN"`}} {
		if !strings.Contains(tc.in.log.String(), tc.want) {
			t.Errorf("start-up log does not say %s:\n%s", tc.want, tc.in.log)
		}
	}
}
