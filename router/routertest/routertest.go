// Package routertest holds the checks that the tests of router, and of
// the applications mounted on it, make of the router's answers.
package routertest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/router"
)

// Leaks are fragments of internal errors that no answer may hold.
var Leaks = []string{"dial tcp", "127.0.0.1:", "connection refused", "FATAL", "SQLSTATE", "pq:", "pgconn", "constraint",
	"channellayer:", "notifier:", "consumer:", "router:", "json:", "strconv", "s3cret"}

// CheckErrorBody fails t unless body is a JSON error answer with a code
// and a sentence, and none of the Leaks, and returns it.
func CheckErrorBody(t testing.TB, what string, status int, h http.Header, body string) router.ErrorBody {
	t.Helper()
	var eb router.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code == "" || eb.Error == "" {
		t.Errorf("%s: %d %q: not a JSON error body with a code and a sentence (%v)", what, status, body, err)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", what, ct)
	}
	for _, l := range Leaks {
		if strings.Contains(body, l) {
			t.Errorf("%s: %d %q holds %q", what, status, body, l)
		}
	}
	return eb
}

// Do sends method url with body and the headers (name, value pairs; a
// "Host" pair sets the request's Host; a request other than a GET is
// application/json unless they say otherwise), and returns the answer's
// status, body and header.
func Do(t testing.TB, method, url, body string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// A Write is a request the router's guards judge by its headers.
type Write struct {
	Name   string
	Status int      // of the refusal; 0 for a write let through
	Code   string   // of the refusal
	Header []string // name, value pairs for Do
}

// CrossSiteWrites are the writes a page on another site can make
// without a CORS preflight (text/plain, form and multipart bodies), and
// writes from foreign origins, for a router whose page is at self (host
// and port) and whose consumers allow the origins app.example.com and
// *.example.org. Every write route must refuse each of them.
func CrossSiteWrites(self string) []Write {
	return []Write{
		{"text/plain from a foreign origin", 403, "cross_site", []string{"Content-Type", "text/plain", "Origin", "http://evil.com"}},
		{"form from a foreign origin", 403, "cross_site", []string{"Content-Type", "application/x-www-form-urlencoded", "Origin", "http://evil.com"}},
		{"JSON from a foreign origin", 403, "cross_site", []string{"Content-Type", "application/json", "Origin", "https://evil.com"}},
		{"same host, other port", 403, "cross_site", []string{"Content-Type", "application/json", "Origin", "http://127.0.0.1:1"}},
		{"null origin (sandboxed frame)", 403, "cross_site", []string{"Content-Type", "application/json", "Origin", "null"}},
		{"cross-site without Origin", 403, "cross_site", []string{"Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"}},
		{"same-site without Origin", 403, "cross_site", []string{"Content-Type", "application/json", "Sec-Fetch-Site", "same-site"}},
		{"text/plain without Origin", 415, "json_required", []string{"Content-Type", "text/plain"}},
		{"text/plain from this page", 415, "json_required", []string{"Content-Type", "text/plain;charset=UTF-8", "Origin", "http://" + self}},
		{"multipart", 415, "json_required", []string{"Content-Type", "multipart/form-data; boundary=x"}},
		{"no Content-Type", 415, "json_required", []string{"Content-Type", ""}},
		{"JSON-like type", 415, "json_required", []string{"Content-Type", "text/json"}},
	}
}

// AllowedWrites are the writes the router's guards let through, from
// backends, the router's own page at self, and the allowed origins of
// CrossSiteWrites.
func AllowedWrites(self string) []Write {
	return []Write{
		{"backend, no Origin", 0, "", []string{"Content-Type", "application/json"}},
		{"this server's page", 0, "", []string{"Content-Type", "application/json", "Origin", "http://" + self, "Sec-Fetch-Site", "same-origin"}},
		{"same-origin without Origin", 0, "", []string{"Content-Type", "application/json", "Sec-Fetch-Site", "same-origin"}},
		{"allowed origin", 0, "", []string{"Content-Type", "application/json; charset=utf-8", "Origin", "https://app.example.com", "Sec-Fetch-Site", "cross-site"}},
		{"allowed origin pattern", 0, "", []string{"Content-Type", "Application/JSON", "Origin", "https://a.example.org"}},
	}
}

// Read returns the next message c gets, failing t if none comes within
// five seconds.
func Read(t testing.TB, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(data)
}
