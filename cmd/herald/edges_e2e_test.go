package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// do sends a request with method to the instance and answers the status,
// the body and the headers.
func (in *instance) do(t *testing.T, method, path, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+in.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestFirstRequestEdges: the answers a new user meets first, from the
// server as it is wired. A wrong method gets 405 with the Allow header
// listing the route's methods; a plain GET on the WebSocket route gets
// 426 saying how to connect; a path nothing serves gets 404; all of
// them JSON with a code, never net/http's text "404 page not found".
func TestFirstRequestEdges(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
		says         []string
	}{
		{"DELETE", "/posts", 405, "method_not_allowed", "GET, POST", nil},
		{"PUT", "/healthz", 405, "method_not_allowed", "GET", nil},
		{"GET", "/api/groups/gossip/send", 405, "method_not_allowed", "POST", nil},
		{"POST", "/", 405, "method_not_allowed", "GET, HEAD", nil},
		{"GET", "/notifications/", 426, "upgrade_required", "", []string{"WebSocket", "text/event-stream"}},
		{"GET", "/api/nothing", 404, "not_found", "", nil},
		{"POST", "/api/nothing", 404, "not_found", "", nil},
		{"GET", "/nothing", 404, "not_found", "", nil},
	} {
		body := ""
		if tc.method != "GET" {
			body = "{}"
		}
		st, got, h := in.do(t, tc.method, tc.path, body)
		what := tc.method + " " + tc.path
		if code := checkLeakFree(t, what, st, got); st != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", what, st, got, tc.status, tc.code)
		}
		if a := h.Get("Allow"); a != tc.allow {
			t.Errorf("%s: Allow %q, want %q", what, a, tc.allow)
		}
		for _, w := range tc.says {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %s does not say %q", what, got, w)
			}
		}
	}
}

// TestBadJSONQuotesTheCharacter: a body that is not JSON because of a
// character outside ASCII is told which character, whole, not the first
// byte of its encoding read as a character ('Ã' for 'é').
func TestBadJSONQuotesTheCharacter(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	for body, char := range map[string]string{`{"type":"x", é}`: "'é'", `{"type":é}`: "'é'", `{"type":"x","a":[1,€]}`: "'€'"} {
		st, got := in.postBody(t, "/api/groups/gossip/send", body)
		if checkLeakFree(t, body, st, got); st != 400 || !strings.Contains(got, char) || strings.ContainsAny(got, "Ãâ") {
			t.Errorf("%s: %d %s, want 400 quoting %s", body, st, got, char)
		}
	}
	if st, got := in.postBody(t, "/api/groups/gossip/send", `{"type":`); st != 400 || strings.Contains(got, "EOF") {
		t.Errorf("cut short: %d %s, want 400 in plain words", st, got)
	}
}

// TestStartSaysLayerUnreachable: started while Redis is unreachable, the
// server serves and reconnects on its own, and its start-up log says
// the layer is not reachable yet; with Redis up it says it is.
func TestStartSaysLayerUnreachable(t *testing.T) {
	t.Parallel()
	t.Run("down", func(t *testing.T) {
		t.Parallel()
		in := startHerald(t, "REDIS_URL=redis://127.0.0.1:"+closedPort(t)+"/0")
		pollUntil(t, "the log to say the layer is not reachable", func() bool {
			return strings.Contains(in.log.String(), "channel layer not reachable yet")
		})
		if st := status("http://" + in.addr + "/readyz"); st != http.StatusServiceUnavailable {
			t.Errorf("/readyz: %d, want 503", st)
		}
	})
	t.Run("up", func(t *testing.T) {
		t.Parallel()
		in := startHerald(t, "REDIS_URL="+redisURL(t), "HERALD_REDIS_PREFIX="+layertest.Prefix(t))
		pollUntil(t, "the log to say the layer is reachable", func() bool {
			return strings.Contains(in.log.String(), "channel layer reachable")
		})
		if strings.Contains(in.log.String(), "not reachable") {
			t.Errorf("with Redis up, the log says it is not reachable:\n%s", in.log.String())
		}
	})
}

// TestReadmeNamesGoVersion keeps the README's build requirement in step
// with go.mod's go line, and its settings row saying that deployments on
// one Redis need their own prefix.
func TestReadmeNamesGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Go " + string(m[1]) + " or later"; !strings.Contains(string(readme), want) {
		t.Errorf("README does not say %q", want)
	}
	row := regexp.MustCompile("(?m)^\\| `-redis-prefix` .*$").Find(readme)
	if !strings.Contains(string(row), "must each set their own") {
		t.Errorf("README's -redis-prefix row does not say deployments sharing a Redis need their own prefix: %s", row)
	}
}
