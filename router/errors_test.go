package router_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/router"
	"github.com/heraldhq/herald/router/routertest"
)

// checkErrorBody fails unless body is a JSON error answer with a code
// and a sentence, and none of the leaks.
var checkErrorBody = routertest.CheckErrorBody

// TestWriteErrorAlwaysHasCode: whatever the status, WriteError's body
// is JSON with a code.
func TestWriteErrorAlwaysHasCode(t *testing.T) {
	for status := 400; status < 600; status++ {
		rec := httptest.NewRecorder()
		router.WriteError(rec, status, "")
		checkErrorBody(t, http.StatusText(status), rec.Code, rec.Header(), rec.Body.String())
		if rec.Code != status {
			t.Errorf("WriteError(%d) answered %d", status, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	router.WriteErrorCode(rec, http.StatusNotFound, router.CodeNoReceivers, "nobody")
	if eb := checkErrorBody(t, "WriteErrorCode", rec.Code, rec.Header(), rec.Body.String()); eb.Code != "no_receivers" {
		t.Errorf("code %q, want no_receivers", eb.Code)
	}
}

// TestEveryErrorAnswerHasCode walks every error answer of the router,
// the API and the consumers' refusals before an upgrade: each is JSON
// with a code and holds no internal error.
func TestEveryErrorAnswerHasCode(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "s3cret")
	e.mustDial("/notifications/")
	auth := []string{"Authorization", "Bearer s3cret"}
	json := []string{"Content-Type", "application/json"}
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	with := func(hs ...[]string) []string {
		var all []string
		for _, h := range hs {
			all = append(all, h...)
		}
		return all
	}
	cases := []struct {
		name, method, path, body string
		header                   []string
		status                   int
		code                     string
	}{
		{"no route", "GET", "/nothing/here", "", nil, 404, "not_found"},
		{"method", "DELETE", "/healthz", "", nil, 405, "method_not_allowed"},
		{"WebSocket route without upgrade", "GET", "/notifications/", "", nil, 426, "upgrade_required"},
		{"upgrade to no WebSocket route", "GET", "/nowhere/", "", upgrade, 404, "not_found"},
		{"upgrade with POST", "POST", "/notifications/", "", upgrade, 405, "method_not_allowed"},
		{"bad WebSocket version", "GET", "/notifications/", "", with(upgrade, []string{"Sec-WebSocket-Version", "7"}), 400, "bad_request"},
		{"foreign origin", "GET", "/notifications/", "", with(upgrade, []string{"Origin", "https://evil.example"}), 403, "forbidden"},
		{"no API token", "POST", "/api/groups/gossip/send", `{"type":"x"}`, json, 401, "unauthorized"},
		{"wrong API token", "POST", "/api/groups/gossip/send", `{"type":"x"}`, with(json, []string{"Authorization", "Bearer nope"}), 401, "unauthorized"},
		{"bad JSON", "POST", "/api/groups/gossip/send", `{"type":`, with(auth, json), 400, "bad_request"},
		{"bad name", "POST", "/api/groups/bad%20name/send", `{"type":"x"}`, with(auth, json), 400, "bad_request"},
		{"no receivers", "POST", "/api/groups/empty/send", `{"type":"x"}`, with(auth, json), 404, "no_receivers"},
		{"no receivers on a channel", "POST", "/api/channels/specific.nobody!x/send", `{"type":"x"}`, with(auth, json), 404, "no_receivers"},
		{"too large", "POST", "/api/groups/gossip/send", `{"type":"x","p":"` + strings.Repeat("a", 70<<10) + `"}`, with(auth, json), 413, "too_large"},
		{"bad idempotency key", "POST", "/api/groups/gossip/send", `{"type":"x"}`, with(auth, json, []string{"Idempotency-Key", strings.Repeat("k", 256)}), 400, "bad_idempotency_key"},
	}
	for _, tc := range cases {
		status, body, h := e.do(tc.method, tc.path, tc.body, tc.header...)
		if status != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.status)
			continue
		}
		if eb := checkErrorBody(t, tc.name, status, h, body); eb.Code != tc.code {
			t.Errorf("%s: code %q, want %q", tc.name, eb.Code, tc.code)
		}
	}

	// A key reused with another body.
	k := []string{"Idempotency-Key", "k1"}
	if st, body, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":1}`, with(auth, json, k)...); st != http.StatusAccepted {
		t.Fatalf("keyed send: %d %s", st, body)
	}
	status, body, h := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":2}`, with(auth, json, k)...)
	if eb := checkErrorBody(t, "key reused", status, h, body); status != 422 || eb.Code != "idempotency_key_reused" {
		t.Errorf("key reused: %d %s", status, body)
	}

	// Client tokens, and the consumers' limits.
	tokens, err := router.NewHMACTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := authEnv(t, tokens, func(s *consumer.Server) { s.MaxConnectionsPerAddr = 1 })
	get := func(srv *httptest.Server, query string) (int, string, http.Header) {
		return routertest.Do(t, "GET", srv.URL+"/notifications/"+query, "", upgrade...)
	}
	for name, query := range map[string]string{"no token": "", "forged token": "?token=x.y.z", "expired token": "?token=" + hsToken(t, -time.Hour)} {
		status, body, h := get(srv, query)
		if eb := checkErrorBody(t, name, status, h, body); status != 401 || eb.Code != "bad_token" {
			t.Errorf("%s: %d %s, want 401 bad_token", name, status, body)
		}
	}
	if _, _, err := dialWith(t, srv, "?token="+hsToken(t, time.Hour), nil); err != nil {
		t.Fatal(err)
	}
	status, body, h = get(srv, "?token="+hsToken(t, time.Hour))
	if eb := checkErrorBody(t, "per-address limit", status, h, body); status != 429 || eb.Code != "rate_limited" {
		t.Errorf("per-address limit: %d %s, want 429 rate_limited", status, body)
	}
	full := authEnv(t, nil, func(s *consumer.Server) { s.MaxConnections = 1 })
	if _, _, err := dialWith(t, full, "", nil); err != nil {
		t.Fatal(err)
	}
	status, body, h = get(full, "")
	if eb := checkErrorBody(t, "instance full", status, h, body); status != 503 || eb.Code != "unavailable" {
		t.Errorf("instance full: %d %s, want 503 unavailable", status, body)
	}
	rejecting := consumerEnv(t, &consumer.JSON{OnConnect: func(context.Context, *consumer.Conn) error {
		return consumer.Reject(http.StatusForbidden, "go away")
	}})
	status, body, h = get(rejecting, "")
	if eb := checkErrorBody(t, "rejected by the consumer", status, h, body); status != 403 || eb.Code != "forbidden" || eb.Error != "go away" {
		t.Errorf("rejected by the consumer: %d %s, want 403 forbidden", status, body)
	}
	failing := consumerEnv(t, &consumer.JSON{OnConnect: func(context.Context, *consumer.Conn) error {
		return errors.New("pgconn: dial tcp 127.0.0.1:5432: connection refused")
	}})
	status, body, h = get(failing, "")
	if eb := checkErrorBody(t, "connect failed", status, h, body); status != 500 || eb.Code != "internal" {
		t.Errorf("connect failed: %d %s, want 500 internal", status, body)
	}
}

// consumerEnv serves /notifications/ with the consumer c.
func consumerEnv(t *testing.T, c consumer.Consumer) *httptest.Server {
	t.Helper()
	layer := channellayer.NewMemory()
	conns := &consumer.Server{Layer: layer}
	rt := router.New(conns, nil)
	rt.WebSocket("/notifications/", func(*http.Request) consumer.Consumer { return c })
	srv := httptest.NewServer(rt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = conns.Shutdown(ctx)
		srv.Close()
		_ = layer.Close()
	})
	return srv
}

// TestReadyzLeaksNothing: a failing check is a 503 naming the part that
// is down in plain words; the underlying error is logged once while it
// lasts, not once per poll, and again when it changes.
func TestReadyzLeaksNothing(t *testing.T) {
	var logged bytes.Buffer
	cause := errors.New("channellayer: dial tcp 127.0.0.1:6379: connect: connection refused")
	var ready error = &router.NotReady{Reason: "channel layer unreachable", Err: cause}
	rt := router.New(&consumer.Server{Layer: channellayer.NewMemory()}, nil)
	(&router.API{
		Layer:  channellayer.NewMemory(),
		Ready:  func(context.Context) error { return ready },
		Logger: slog.New(slog.NewTextHandler(&logged, nil)),
	}).Mount(rt.HTTP())
	srv := httptest.NewServer(rt)
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 20 {
		status, body := get()
		want := `{"code":"unavailable","error":"channel layer unreachable","status":"unavailable"}` + "\n"
		if status != 503 || body != want {
			t.Fatalf("/readyz: %d %q, want 503 %q", status, body, want)
		}
	}
	if n := strings.Count(logged.String(), "dial tcp"); n != 1 {
		t.Errorf("20 polls logged the cause %d times, want once:\n%s", n, logged.String())
	}
	ready = errors.New("pgconn: FATAL: database \"herald_prod\" does not exist (SQLSTATE 3D000)")
	status, body := get()
	if status != 503 || strings.Contains(body, "FATAL") || strings.Contains(body, "herald_prod") || !strings.Contains(body, `"code":"unavailable"`) {
		t.Errorf("/readyz with a plain error: %d %s", status, body)
	}
	if !strings.Contains(logged.String(), "3D000") {
		t.Errorf("a changed cause was not logged:\n%s", logged.String())
	}
	ready = nil
	if status, body := get(); status != 200 {
		t.Errorf("/readyz when ready: %d %s", status, body)
	}
	if !strings.Contains(logged.String(), "ready again") {
		t.Errorf("the return to ready was not logged:\n%s", logged.String())
	}
}

// TestMethodNotAllowedSaysAllow: every 405 lists the methods of the
// route in Allow, as RFC 9110 requires, for the HTTP routes (nested ones
// too) and the WebSocket routes alike.
func TestMethodNotAllowedSaysAllow(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, tc := range []struct {
		method, path, allow string
		header              []string
	}{
		{"PUT", "/healthz", "GET", nil},
		{"GET", "/api/groups/gossip/send", "POST", nil},
		{"PATCH", "/api/channels/specific.x!y/send", "POST", nil},
		{"POST", "/notifications/", "GET", upgrade},
	} {
		status, body, h := e.do(tc.method, tc.path, "{}", tc.header...)
		checkErrorBody(t, tc.method+" "+tc.path, status, h, body)
		if status != http.StatusMethodNotAllowed || h.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d, Allow %q, want 405 with Allow %q", tc.method, tc.path, status, h.Get("Allow"), tc.allow)
		}
	}
}
