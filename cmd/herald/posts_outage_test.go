package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier/pgtest"
)

// TestPostsHeldDuringRedisOutage: with Postgres and a Redis that stops,
// posts committed meanwhile are accepted (201 pending) and reach no
// client without a history id; once Redis is back they arrive, in order,
// once, each with an id, and a client resuming from the first one's id
// gets the rest.
func TestPostsHeldDuringRedisOutage(t *testing.T) {
	t.Parallel()
	rs := layertest.StartRedis(t)
	db := pgtest.NewDatabase(t)
	in := startHerald(t, "REDIS_URL=redis://"+rs.Addr+"/0", "DATABASE_URL="+db)
	in.waitReady(t)
	c := dialNotifications(t, in.addr)
	joinedEverywhere(t, in)

	rs.Stop()
	pollUntil(t, "/readyz to report not ready", func() bool { return status("http://"+in.addr+"/readyz") == http.StatusServiceUnavailable })
	var want []string
	for i := range 3 {
		msg := fmt.Sprint("held ", i)
		st, body := in.postBody(t, "/posts", `{"author":"ann","message":"`+msg+`"}`)
		if st != http.StatusCreated || !strings.Contains(body, `"delivery":"pending"`) {
			t.Fatalf("POST /posts with Redis down: %d %s, want 201 pending", st, body)
		}
		want = append(want, msg)
	}

	// The outage outlasts the client's retries: the notifier holds.
	pollUntil(t, "the notifier to hold the posts", func() bool {
		return strings.Contains(in.log.String(), "notifier: the layer is unreachable; holding rows")
	})
	rs.Restart()
	in.waitReady(t)
	if st := in.post(t, "/posts", `{"author":"ann","message":"sentinel"}`); st != http.StatusCreated {
		t.Fatal(st)
	}
	want = append(want, "sentinel") // anything twice comes before it
	var ids []string
	for i, msg := range want {
		got := c.nextPost()
		id, _ := got["herald_id"].(string)
		if got["message"] != msg || id == "" {
			t.Fatalf("frame %d: %v, want %q with a history id", i, got, msg)
		}
		ids = append(ids, id)
	}

	r := dialNotificationsPath(t, in.addr, "/notifications/?since="+url.QueryEscape(ids[0]))
	for i, msg := range want[1:] {
		if got := r.nextPost(); got["message"] != msg || got["herald_id"] != ids[i+1] {
			t.Fatalf("resumed frame %d: %v, want %q with id %s", i, got, msg, ids[i+1])
		}
	}
}
