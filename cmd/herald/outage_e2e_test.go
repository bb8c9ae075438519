package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// pollUntil polls cond until it holds or the wait runs out.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func metric(t *testing.T, in *instance, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestRedisOutageFromOutside is what an operator sees when Redis goes
// away and comes back: clients stay connected, /readyz and API sends say
// 503 meanwhile, the metrics count it, and messages flow again after.
func TestRedisOutageFromOutside(t *testing.T) {
	t.Parallel()
	rs, in, c := redisDown(t)
	if st := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","n":1}`); st != http.StatusServiceUnavailable {
		t.Fatalf("send while Redis is down: %d, want 503", st)
	}
	if n := metric(t, in, `herald_layer_errors_total{op="group_send"}`); n < 1 {
		t.Errorf("herald_layer_errors_total{op=\"group_send\"} = %v, want at least 1", n)
	}

	rs.Restart()
	pollUntil(t, "/readyz to report ready", func() bool { return status("http://"+in.addr+"/readyz") == http.StatusOK })
	if st := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","n":2}`); st != http.StatusAccepted {
		t.Fatalf("send after Redis returned: %d", st)
	}
	// Redis came back empty, so the instance cannot replay what its
	// clients may have missed: it tells them to resync, then goes on.
	got := c.next()
	if got["type"] == "resync" {
		got = c.next()
	}
	if got["n"] != float64(2) {
		t.Fatalf("client got %v, want n=2", got)
	}
	if n := metric(t, in, `herald_layer_events_total{kind="reconnects"}`); n < 1 {
		t.Errorf("reconnects = %v, want at least 1", n)
	}
}

// redisDown starts herald on a Redis of the test's own with a client at
// /notifications/ that has joined, then stops Redis and waits for /readyz
// to say so.
func redisDown(t *testing.T) (*layertest.RedisServer, *instance, *client) {
	t.Helper()
	rs := layertest.StartRedis(t)
	in := startHerald(t, "REDIS_URL=redis://"+rs.Addr+"/0")
	in.waitReady(t)
	c := dialNotifications(t, in.addr)
	joinedEverywhere(t, in)
	rs.Stop()
	pollUntil(t, "/readyz to report not ready", func() bool { return status("http://"+in.addr+"/readyz") == http.StatusServiceUnavailable })
	return rs, in, c
}
