package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald/notifier/pgtest"
)

// postKeyed POSTs body to path with an Idempotency-Key and returns the
// answer.
func (in *instance) postKeyed(t *testing.T, path, body, key string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+in.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// nextPost returns the next post announcement c gets, skipping resync
// frames.
func (c *client) nextPost() map[string]any {
	c.t.Helper()
	for {
		if got := c.next(); got["type"] != "resync" {
			return got
		}
	}
}

// TestPostRetriedWithKeyCreatesOne: a POST /posts retried with the same
// Idempotency-Key, on the same instance or (with Postgres) on another,
// creates one post, delivered once, and is answered as the first was.
func TestPostRetriedWithKeyCreatesOne(t *testing.T) {
	t.Parallel()
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		in := startHerald(t)
		in.waitReady(t)
		testPostRetriedWithKey(t, in, in)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		db := pgtest.NewDatabase(t)
		a, b := startHerald(t, "DATABASE_URL="+db), startHerald(t, "DATABASE_URL="+db)
		a.waitReady(t)
		b.waitReady(t)
		testPostRetriedWithKey(t, a, b)
	})
}

func testPostRetriedWithKey(t *testing.T, first, retry *instance) {
	c := dialNotifications(t, first.addr)
	joinedEverywhere(t, first)
	post := `{"author":"ann","message":"exactly once"}`
	st, body, h := first.postKeyed(t, "/posts", post, "retry-me")
	if st != http.StatusCreated || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first POST /posts: %d %s", st, body)
	}
	st, again, h := retry.postKeyed(t, "/posts", post, "retry-me")
	if st != http.StatusCreated || again != body || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %s (replayed %q), want %s replayed", st, again, h.Get("Idempotent-Replayed"), body)
	}
	if st, body, _ := retry.postKeyed(t, "/posts", `{"author":"ann","message":"changed"}`, "retry-me"); st != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other post: %d %s, want 422", st, body)
	}
	if got := c.nextPost(); got["message"] != "exactly once" {
		t.Fatalf("got %v, want the post", got)
	}
	if st := first.post(t, "/posts", `{"author":"ann","message":"sentinel"}`); st != http.StatusCreated {
		t.Fatal(st)
	}
	if got := c.nextPost(); got["message"] != "sentinel" {
		t.Fatalf("got %v after the post, want the sentinel: the retry was delivered again", got)
	}
	_, recent := first.getBody(t, "/posts")
	if n := strings.Count(recent, `"exactly once"`); n != 1 {
		t.Fatalf("the post is stored %d times: %s", n, recent)
	}
}

// getBody GETs path and returns the answer.
func (in *instance) getBody(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPostDuringRedisOutage: with the in-memory store on a Redis that is
// down, POST /posts stores the post and says its delivery is pending
// (201, not 503, so that the publisher does not post it again); a
// retry with the same key does not make a second one; once Redis is
// back the post reaches the client that stayed connected, once.
func TestPostDuringRedisOutage(t *testing.T) {
	t.Parallel()
	rs, in, c := redisDown(t)
	post := `{"author":"ann","message":"while Redis is down"}`
	st, body, _ := in.postKeyed(t, "/posts", post, "outage-1")
	if st != http.StatusCreated || !strings.Contains(body, `"delivery":"pending"`) {
		t.Fatalf("POST /posts with Redis down: %d %s, want 201 pending", st, body)
	}
	if st, again, h := in.postKeyed(t, "/posts", post, "outage-1"); st != http.StatusCreated || again != body || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry with Redis down: %d %s, want %s replayed", st, again, body)
	}

	rs.Restart()
	if got := c.nextPost(); got["message"] != "while Redis is down" {
		t.Fatalf("after Redis returned the client got %v, want the pending post", got)
	}
	if st := in.post(t, "/posts", `{"author":"ann","message":"sentinel"}`); st != http.StatusCreated {
		t.Fatal(st)
	}
	if got := c.nextPost(); got["message"] != "sentinel" {
		t.Fatalf("got %v, want the sentinel: the pending post came twice", got)
	}
}
