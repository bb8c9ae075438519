package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/notifier/pgtest"
)

// closedPort returns a loopback port where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// get answers GET url's status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkLeakFree fails unless body is a JSON error answer with a code
// and a sentence, holding none of the words of internal errors, nor any
// of also.
func checkLeakFree(t *testing.T, what string, status int, body string, also ...string) string {
	t.Helper()
	var eb struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code == "" || eb.Error == "" {
		t.Errorf("%s: %d %q is not a JSON error answer with a code and a sentence", what, status, body)
	}
	for _, w := range append([]string{"dial tcp", "127.0.0.1", "connect:", "refused", "FATAL", "SQLSTATE", "ERROR:",
		"pgconn", "channellayer:", "notifier:", "user=", "database=", "s3cret"}, also...) {
		if strings.Contains(body, w) {
			t.Errorf("%s: %d %q holds %q", what, status, body, w)
		}
	}
	return eb.Code
}

// TestRedisDownAnswersLeakNothing: with Redis unreachable, /readyz and
// API sends answer 503 with a code and plain words, never the dial
// error with its address; the log has the error, without the URL's
// password.
func TestRedisDownAnswersLeakNothing(t *testing.T) {
	t.Parallel()
	port := closedPort(t)
	in := startHerald(t, "REDIS_URL=redis://herald:s3cret@127.0.0.1:"+port+"/0")
	base := "http://" + in.addr
	pollUntil(t, "/readyz to report not ready", func() bool { return status(base+"/readyz") == http.StatusServiceUnavailable })
	st, body := get(t, base+"/readyz")
	if code := checkLeakFree(t, "/readyz", st, body, port); st != 503 || code != "unavailable" || !strings.Contains(body, "channel layer") {
		t.Errorf("/readyz: %d %s, want 503 unavailable naming the channel layer", st, body)
	}
	for _, path := range []string{"/api/groups/gossip/send", "/api/channels/specific.x!y/send"} {
		st, body := in.postBody(t, path, `{"type":"name.gossip"}`)
		if code := checkLeakFree(t, path, st, body, port); st != 503 || code != "unavailable" {
			t.Errorf("%s: %d %s, want 503 unavailable", path, st, body)
		}
	}
	// Without Postgres a post is kept in memory until Redis is back.
	if st, body := in.postBody(t, "/posts", `{"author":"ann","message":"hi"}`); st >= 300 {
		checkLeakFree(t, "POST /posts", st, body, port)
	}
	pollUntil(t, "the log to have the dial error", func() bool { return strings.Contains(in.log.String(), "127.0.0.1:"+port) })
	if strings.Contains(in.log.String(), "s3cret") {
		t.Errorf("the log holds REDIS_URL's password:\n%s", in.log.String())
	}
}

// TestPostgresDownAnswersLeakNothing: with Postgres unreachable, or its
// database missing (FATAL), /readyz and /posts answer 503 with a code
// and plain words, never Postgres' text, its user or database names.
func TestPostgresDownAnswersLeakNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Skipf("pgtest's URL %q is not a URL", db)
	}
	missing := "herald_absent_" + strconv.FormatInt(int64(os.Getpid()), 10)
	u.Path = "/" + missing
	absent := u.String()
	port := closedPort(t)
	for name, tc := range map[string]struct {
		url  string
		also []string
	}{
		"closed port":      {"postgres://herald_owner:s3cret@127.0.0.1:" + port + "/herald_prod?sslmode=disable", []string{port, "herald_owner", "herald_prod"}},
		"missing database": {absent, []string{missing, "does not exist", u.User.Username()}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := startHerald(t, "DATABASE_URL="+tc.url)
			base := "http://" + in.addr
			st, body := get(t, base+"/readyz")
			if code := checkLeakFree(t, "/readyz", st, body, tc.also...); st != 503 || code != "unavailable" {
				t.Errorf("/readyz: %d %s, want 503 unavailable", st, body)
			}
			st, body = in.postBody(t, "/posts", `{"author":"ann","message":"hi"}`)
			if code := checkLeakFree(t, "POST /posts", st, body, tc.also...); st != 503 || code != "unavailable" {
				t.Errorf("POST /posts: %d %s, want 503 unavailable", st, body)
			}
			st, body = get(t, base+"/posts")
			if code := checkLeakFree(t, "GET /posts", st, body, tc.also...); st != 503 || code != "unavailable" {
				t.Errorf("GET /posts: %d %s, want 503 unavailable", st, body)
			}
			if !strings.Contains(in.log.String(), "demo: creating post failed") {
				t.Errorf("the store's error was not logged:\n%s", in.log.String())
			}
			if strings.Contains(in.log.String(), "s3cret") {
				t.Errorf("the log holds DATABASE_URL's password:\n%s", in.log.String())
			}
		})
	}
}

// TestConstraintViolationIs4xx: a post that the posts table's own rules
// refuse (constraints an operator added) is the client's to fix: 409 for
// a unique violation, 422 for a check, 400 for a value the column cannot
// hold, with plain words and no constraint name or SQLSTATE.
func TestConstraintViolationIs4xx(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	in := startHerald(t, "DATABASE_URL="+db)
	in.waitReady(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, ddl := range []string{
		`CREATE UNIQUE INDEX posts_message_once ON posts (message)`,
		`ALTER TABLE posts ADD CONSTRAINT posts_no_shouting CHECK (message <> upper(message))`,
		`ALTER TABLE posts ALTER COLUMN author TYPE varchar(8)`,
	} {
		if _, err := conn.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	if st, body := in.postBody(t, "/posts", `{"author":"ann","message":"hello"}`); st != http.StatusCreated {
		t.Fatalf("first post: %d %s", st, body)
	}
	names := []string{"posts_message_once", "posts_no_shouting", "varchar", "character varying", "23505", "23514", "22001", "violates"}
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
	}{
		{"unique", `{"author":"ann","message":"hello"}`, http.StatusConflict, "conflict"},
		{"check", `{"author":"ann","message":"HELLO"}`, http.StatusUnprocessableEntity, "rejected"},
		{"too long for the column", `{"author":"annabelle-marie","message":"hi there"}`, http.StatusBadRequest, "bad_request"},
	} {
		st, body := in.postBody(t, "/posts", tc.body)
		if code := checkLeakFree(t, tc.name, st, body, names...); st != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, st, body, tc.status, tc.code)
		}
	}
	if !strings.Contains(in.log.String(), "SQLSTATE 23505") {
		t.Errorf("the database's error was not logged:\n%s", in.log.String())
	}
}

// TestBadSettingHidesPassword: a malformed REDIS_URL, DATABASE_URL or
// REDIS_CLUSTER_ADDRS stops the server with a message that names the
// setting and not its password.
func TestBadSettingHidesPassword(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{
		{"REDIS_URL=redis://user:s3cret@127.0.0.1:6379/notanumber"},
		{"REDIS_URL=redis://user:s3cret@127.0.0.1:port/0"},
		{"REDIS_URL=redis://:s3cret@[::1/0"},
		{"REDIS_URL=redis://us%zz:s3cret@127.0.0.1/0"},
		{"REDIS_URL=rediss://user:s3cret@127.0.0.1:1/0?protocol=x"},
		{"REDIS_URL=redis://user:s3cr%65t@127.0.0.1:port/0"},
		{"REDIS_CLUSTER_ADDRS=user:s3cret@127.0.0.1:7000"},
		{"REDIS_CLUSTER_ADDRS=redis://user:s3cret@127.0.0.1:7000"},
		{"DATABASE_URL=postgres://user:s3cret@127.0.0.1:port/db"},
		{"HERALD_CHANNELS_REDIS=core", "HERALD_CHANNELS_REDIS_PREFIX=bad prefix", "REDIS_URL=redis://user:s3cret@127.0.0.1:1/0"},
		{"HERALD_CHANNELS_REDIS=sideways", "HERALD_CHANNELS_REDIS_KEYS=s3cret", "REDIS_URL=redis://user:s3cret@127.0.0.1:1/0"},
	} {
		cmd := exec.Command(heraldBinary)
		cmd.Env = append(os.Environ(), "HERALD_ADDR=", "REDIS_URL=", "DATABASE_URL=", "REDIS_CLUSTER_ADDRS=")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		setting, _, _ := strings.Cut(env[0], "=")
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%s: exit %v, want 2: %s", env, err, out)
		}
		if !strings.Contains(string(out), setting) {
			t.Errorf("%s: message does not name %s: %s", env, setting, out)
		}
		for _, secret := range []string{"s3cret", "s3cr%65t"} {
			if strings.Contains(string(out), secret) {
				t.Errorf("%s: message holds the password: %s", env, out)
			}
		}
	}
}
