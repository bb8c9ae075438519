package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/cmd/internal/demo"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/router"
	"github.com/heraldhq/herald/router/routertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

// options change what newEnv serves; the zero value serves posts kept
// in memory on a memory layer.
type options struct {
	layer  channellayer.Layer
	store  notifier.Store // default: a MemoryStore on layer
	limit  *router.RateLimit
	logger *slog.Logger
	setup  func(*router.Router, *consumer.Server) // before serving
}

type env struct {
	t     *testing.T
	srv   *httptest.Server
	conns *consumer.Server
}

// newEnv serves the demo as the server wires it: its WebSocket route,
// and its posts mounted on the router's HTTP routes.
func newEnv(t *testing.T, o options) *env {
	t.Helper()
	if o.layer == nil {
		o.layer = channellayer.NewMemory()
	}
	conns := &consumer.Server{Layer: o.layer, PublicGroups: []string{demo.Group}}
	ctor, err := consumer.NewForwarder(demo.Forwarder())
	if err != nil {
		t.Fatal(err)
	}
	rt := router.New(conns, o.logger)
	rt.WebSocket(demo.Path, ctor)
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	if o.store == nil {
		mem, err := notifier.NewMemoryStore(o.layer, demo.Group)
		if err != nil {
			t.Fatal(err)
		}
		o.store = mem
		go func() { defer close(ran); _ = mem.Run(runCtx) }()
	} else {
		close(ran)
	}
	(&demo.Posts{Store: o.store, Logger: o.logger}).Mount(rt.HTTP(), o.limit.Handler)
	if o.setup != nil {
		o.setup(rt, conns)
	}
	e := &env{t: t, srv: httptest.NewServer(rt), conns: conns}
	t.Cleanup(func() {
		stopRun()
		<-ran
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = conns.Shutdown(ctx)
		e.srv.Close()
		_ = o.layer.Close()
	})
	return e
}

// listen connects a browser of the demo and waits until it has joined.
func (e *env) listen() *websocket.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+demo.Path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.CloseNow() })
	for deadline := time.Now().Add(wait); e.conns.Stats().Open == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatal("connection not open")
		}
	}
	return c
}

// read returns the next message c gets, failing t after a few seconds.
var read = routertest.Read

// do is routertest.Do on path; an error answer must be JSON with a
// code.
func (e *env) do(method, path, body string, header ...string) (int, string, http.Header) {
	e.t.Helper()
	status, b, h := routertest.Do(e.t, method, e.srv.URL+path, body, header...)
	if status >= 400 && (code(b) == "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json")) {
		e.t.Errorf("%s %s: %d with body %q, want a JSON error", method, path, status, b)
	}
	return status, b, h
}

// code returns the code of an error answer's body.
func code(body string) string {
	var eb router.ErrorBody
	_ = json.Unmarshal([]byte(body), &eb)
	return eb.Code
}

func TestPostsAPI(t *testing.T) {
	e := newEnv(t, options{})
	c := e.listen()
	status, body, _ := e.do("POST", "/posts", `{"author":"ana","message":"first!"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var post notifier.Post
	if err := json.Unmarshal([]byte(body), &post); err != nil || post.ID == 0 || post.Author != "ana" {
		t.Fatalf("created %s: %v", body, err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(read(t, c)), &got); err != nil {
		t.Fatal(err)
	}
	if got["type"] != "name.gossip" || got["event"] != "New Post" || got["sender"] != "ana" || got["message"] != "first!" || got["id"] != float64(post.ID) {
		t.Fatalf("notification %v", got)
	}
	status, body, _ = e.do("GET", "/posts?limit=10", "")
	if status != http.StatusOK || !strings.Contains(body, `"first!"`) {
		t.Fatalf("list: %d %s", status, body)
	}
	for _, bad := range []string{`{}`, `{"author":"","message":"x"}`, `{"author":"a","message":""}`, `{"author":"a","message":"x","extra":1}`, `{"author":1,"message":"x"}`, `nope`} {
		if status, body, _ := e.do("POST", "/posts", bad); status != http.StatusBadRequest {
			t.Errorf("POST /posts %s: %d %s, want 400", bad, status, body)
		}
	}
	if status, _, _ := e.do("GET", "/posts?limit=0", ""); status != http.StatusBadRequest {
		t.Errorf("limit=0: %d, want 400", status)
	}
}

// TestPostWithLayerDown uses a real Redis client aimed at a port where
// no Redis listens: a stored post is accepted, its delivery pending, as
// retrying it would post it twice.
func TestPostWithLayerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	layer, err := channellayer.NewRedis(client, channellayer.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, options{layer: layer})
	if status, body, _ := e.do("POST", "/posts", `{"author":"a","message":"b"}`); status != http.StatusCreated || !strings.Contains(body, `"delivery":"pending"`) {
		t.Fatalf("post with Redis down: %d %s, want 201 pending", status, body)
	}
}

// TestPostsGuarded: the router's guards hold for the posts mounted on
// it: a cross-site write or one that is not JSON never reaches the
// store, a foreign Host gets 421; writes from this server's page, an
// allowed origin and backends go through, and a foreign page may read.
func TestPostsGuarded(t *testing.T) {
	e := newEnv(t, options{setup: func(_ *router.Router, conns *consumer.Server) {
		conns.OriginPatterns = []string{"app.example.com", "*.example.org"}
	}})
	c := e.listen()
	self := strings.TrimPrefix(e.srv.URL, "http://")
	post := `{"author":"mallory","message":"forged"}`
	for _, tc := range routertest.CrossSiteWrites(self) {
		if status, body, _ := e.do("POST", "/posts", post, tc.Header...); status != tc.Status || code(body) != tc.Code {
			t.Errorf("POST /posts, %s: %d %s, want %d %q", tc.Name, status, body, tc.Status, tc.Code)
		}
	}
	for _, method := range []string{"PUT", "DELETE", "PATCH"} {
		if status, body, _ := e.do(method, "/posts", post, "Content-Type", "text/plain", "Origin", "http://evil.com"); status != 403 || code(body) != "cross_site" {
			t.Errorf("%s /posts from a foreign origin: %d %s, want 403", method, status, body)
		}
	}
	for _, tc := range routertest.AllowedWrites(self) {
		if status, body, _ := e.do("POST", "/posts", `{"author":"ana","message":"ok"}`, tc.Header...); status != http.StatusCreated {
			t.Errorf("post, %s: %d %s, want 201", tc.Name, status, body)
		}
		if got := read(t, c); strings.Contains(got, "forged") || !strings.Contains(got, `"ok"`) {
			t.Fatalf("listener got %s, want the allowed post", got)
		}
	}
	// Reads are not writes: a foreign page may GET (CORS keeps the answer
	// from it).
	if status, _, _ := e.do("GET", "/posts", "", "Origin", "http://evil.com", "Sec-Fetch-Site", "cross-site"); status != http.StatusOK {
		t.Errorf("GET /posts from a foreign origin: %d, want 200", status)
	}

	hosts := newEnv(t, options{setup: func(rt *router.Router, _ *consumer.Server) {
		rt.AllowedHosts = append([]string{"herald.example.com"}, router.LoopbackHosts...)
	}})
	for _, method := range []string{"GET", "POST"} {
		status, body, _ := hosts.do(method, "/posts", post, "Host", "evil.example", "Origin", "http://evil.example")
		if status != http.StatusMisdirectedRequest || code(body) != "host_not_allowed" {
			t.Errorf("%s /posts for Host evil.example: %d %s, want 421 host_not_allowed", method, status, body)
		}
	}
	// The "own host" of the Origin check is an allowed one: a page on an
	// allowed host is not thereby trusted by another.
	if status, body, _ := hosts.do("POST", "/posts", post, "Host", "herald.example.com", "Origin", "http://localhost"); status != http.StatusForbidden {
		t.Errorf("Host herald.example.com, Origin localhost: %d %s, want 403", status, body)
	}
}

// TestPostErrorsHaveCodes walks the error answers of the posts: each is
// JSON with a code and holds no internal error.
func TestPostErrorsHaveCodes(t *testing.T) {
	e := newEnv(t, options{})
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"post not JSON", "POST", "/posts", `nope`, 400, "bad_request"},
		{"post unknown field", "POST", "/posts", `{"author":"a","message":"b","x":1}`, 400, "bad_request"},
		{"post wrong type", "POST", "/posts", `{"author":1,"message":"b"}`, 400, "bad_request"},
		{"post two objects", "POST", "/posts", `{"author":"a","message":"b"}{}`, 400, "bad_request"},
		{"post missing field", "POST", "/posts", `{"author":"a"}`, 400, "bad_request"},
		{"post invalid", "POST", "/posts", `{"author":" ","message":"b"}`, 400, "bad_request"},
		{"bad limit", "GET", "/posts?limit=x", "", 400, "bad_request"},
	} {
		status, body, h := e.do(tc.method, tc.path, tc.body)
		if eb := routertest.CheckErrorBody(t, tc.name, status, h, body); status != tc.status || eb.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	// Every 405 lists the route's methods in Allow, as RFC 9110 requires.
	if status, body, h := e.do("DELETE", "/posts", "{}"); status != http.StatusMethodNotAllowed || routertest.CheckErrorBody(t, "DELETE /posts", status, h, body).Code != "method_not_allowed" || h.Get("Allow") != "GET, POST" {
		t.Errorf("DELETE /posts: %d %s, Allow %q, want 405 with Allow \"GET, POST\"", status, body, h.Get("Allow"))
	}
	// A key reused with another body.
	if st, body, _ := e.do("POST", "/posts", `{"author":"a","message":"one"}`, "Idempotency-Key", "k1"); st != http.StatusCreated {
		t.Fatalf("keyed post: %d %s", st, body)
	}
	status, body, h := e.do("POST", "/posts", `{"author":"a","message":"two"}`, "Idempotency-Key", "k1")
	if eb := routertest.CheckErrorBody(t, "key reused", status, h, body); status != 422 || eb.Code != "idempotency_key_reused" {
		t.Errorf("key reused: %d %s", status, body)
	}
}

// failingStore is a posts store whose every call fails with err.
type failingStore struct{ err error }

func (s failingStore) Create(context.Context, notifier.NewPost) (notifier.Created, error) {
	return notifier.Created{}, s.err
}
func (s failingStore) Recent(context.Context, int) ([]notifier.Post, error) { return nil, s.err }

// storeErrors are what a Postgres store's failures look like: the
// answer must hold none of their words.
var storeErrors = []error{
	errors.New(`notifier: create post: failed to connect to ` + "`user=herald database=herald_prod`" + `: 127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused`),
	errors.New(`notifier: create post: FATAL: password authentication failed for user "herald" (SQLSTATE 28P01)`),
	errors.New(`notifier: create post: FATAL: database "herald_prod" does not exist (SQLSTATE 3D000)`),
}

// TestStoreFailuresLeakNothing: a store that cannot be reached is a 503
// with a code and plain words, for POST and GET /posts.
func TestStoreFailuresLeakNothing(t *testing.T) {
	for _, serr := range storeErrors {
		var logged bytes.Buffer
		e := newEnv(t, options{store: failingStore{serr}, logger: slog.New(slog.NewTextHandler(&logged, nil))})
		for _, req := range []struct{ method, body string }{{"POST", `{"author":"a","message":"b"}`}, {"GET", ""}} {
			status, body, h := e.do(req.method, "/posts", req.body)
			eb := routertest.CheckErrorBody(t, req.method+" /posts", status, h, body)
			for _, word := range []string{"herald_prod", "user=", "28P01", "3D000", "5432"} {
				if strings.Contains(body, word) {
					t.Errorf("%s /posts: %s holds %q", req.method, body, word)
				}
			}
			if status != 503 || eb.Code != "unavailable" || h.Get("Retry-After") == "" {
				t.Errorf("%s /posts: %d %s, want 503 unavailable with Retry-After", req.method, status, body)
			}
		}
		if !strings.Contains(logged.String(), "SQLSTATE") && !strings.Contains(logged.String(), "dial tcp") {
			t.Errorf("the underlying error was not logged:\n%s", logged.String())
		}
	}
}

// TestRefusedPostIs4xx: a post the database's rules refuse is the
// client's to fix: 409 for a unique violation, 422 for another rule,
// 400 for a value the database cannot take, never a 503.
func TestRefusedPostIs4xx(t *testing.T) {
	pgErr := errors.New(`ERROR: new row for relation "posts" violates check constraint "posts_message_check" (SQLSTATE 23514)`)
	for _, tc := range []struct {
		kind   error
		status int
		code   string
	}{
		{notifier.ErrPostConflict, 409, "conflict"},
		{nil, 422, "rejected"},
		{notifier.ErrInvalidPost, 400, "bad_request"},
	} {
		refused := &notifier.RefusedError{Reason: "the post was not stored: it breaks a rule", Kind: tc.kind, Err: pgErr}
		e := newEnv(t, options{store: failingStore{refused}, logger: slog.New(slog.DiscardHandler)})
		status, body, h := e.do("POST", "/posts", `{"author":"a","message":"b"}`)
		eb := routertest.CheckErrorBody(t, "refused post", status, h, body)
		if status != tc.status || eb.Code != tc.code || strings.Contains(body, "posts_message_check") || strings.Contains(body, "23514") {
			t.Errorf("refused post (%v): %d %s, want %d %s", tc.kind, status, body, tc.status, tc.code)
		}
	}
}

func TestBadIdempotencyKeyOnPost(t *testing.T) {
	e := newEnv(t, options{})
	for _, key := range []string{strings.Repeat("k", 256), "caf\u00e9", "tab\there"} {
		if status, body, _ := e.do("POST", "/posts", `{"author":"a","message":"b"}`, "Idempotency-Key", key); status != http.StatusBadRequest || code(body) != "bad_idempotency_key" {
			t.Errorf("POST /posts with key %q: %d %s, want 400 bad_idempotency_key", key, status, body)
		}
	}
	if status, body, _ := e.do("POST", "/posts", `{"author":"a","message":"b"}`, "Idempotency-Key", strings.Repeat("k", 255)); status != http.StatusCreated {
		t.Errorf("a 255-byte key: %d %s, want 201", status, body)
	}
}

// TestIdempotentPost: a post retried with the same key is stored once
// and answered as the first was.
func TestIdempotentPost(t *testing.T) {
	e := newEnv(t, options{})
	post := `{"author":"ann","message":"once"}`
	status, first, h := e.do("POST", "/posts", post, "Idempotency-Key", "post-1")
	if status != http.StatusCreated || !strings.Contains(first, `"delivery":"sent"`) || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first post: %d %s", status, first)
	}
	status, again, h := e.do("POST", "/posts", post, "Idempotency-Key", "post-1")
	if status != http.StatusCreated || again != first || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s (replayed %q), want %s replayed", status, again, h.Get("Idempotent-Replayed"), first)
	}
	status, body, _ := e.do("POST", "/posts", `{"author":"ann","message":"other"}`, "Idempotency-Key", "post-1")
	if status != http.StatusUnprocessableEntity || code(body) != "idempotency_key_reused" {
		t.Fatalf("same key, other post: %d %s, want 422 idempotency_key_reused", status, body)
	}
	if _, body, _ := e.do("GET", "/posts", ""); strings.Count(body, `"once"`) != 1 || strings.Contains(body, `"other"`) {
		t.Fatalf("posts stored: %s, want the one post once", body)
	}
}

// TestPostsRateLimited: the router's per-address limit, put in front of
// POST /posts, refuses an address past its burst with 429 and
// Retry-After; the API token, another address and reads are not
// limited.
func TestPostsRateLimited(t *testing.T) {
	var refused []string
	lim := &router.RateLimit{
		Rate: 0.5, Burst: 3, Token: "backend-token",
		ClientAddr: router.ClientAddr([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
		Refused:    func(reason string) { refused = append(refused, reason) },
	}
	e := newEnv(t, options{limit: lim})
	post := func(from string, header ...string) (int, string, http.Header) {
		return e.do("POST", "/posts", `{"author":"a","message":"m"}`, append([]string{"X-Forwarded-For", from}, header...)...)
	}
	for i := 0; i < 3; i++ {
		if status, _, _ := post("203.0.113.6"); status == http.StatusTooManyRequests {
			t.Fatalf("request %d within the burst: 429", i)
		}
	}
	// With the API token there is no limit at all.
	for i := 0; i < 10; i++ {
		if status, _, _ := post("203.0.113.6", "Authorization", "Bearer backend-token"); status == http.StatusTooManyRequests {
			t.Fatalf("request %d with the API token: 429", i)
		}
	}
	status, body, h := post("203.0.113.6")
	if status != http.StatusTooManyRequests || code(body) != "rate_limited" {
		t.Fatalf("past the burst: %d %s, want 429 rate_limited", status, body)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After %q, want whole seconds from 1 to 2 (a token every 2 s)", h.Get("Retry-After"))
	}
	if status, _, _ := post("198.51.100.1"); status == http.StatusTooManyRequests {
		t.Fatalf("another address: 429")
	}
	if len(refused) != 1 || refused[0] != "rate_limited" {
		t.Errorf("refusals reported: %v, want one rate_limited", refused)
	}
	for i := 0; i < 5; i++ {
		if status, body, _ := e.do("GET", "/posts", "", "X-Forwarded-For", "203.0.113.6"); status != http.StatusOK {
			t.Fatalf("GET /posts from the limited address: %d %s, want 200", status, body)
		}
	}
}
