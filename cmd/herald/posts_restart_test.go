package main

import (
	"encoding/json"
	"net/http"
	"os"
	"testing"
)

// TestMemoryPostIDsAfterRestart: a restarted server without Postgres
// does not hand out the ids of posts made before the restart, which a
// page still shows and would drop new posts for.
func TestMemoryPostIDsAfterRestart(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	in.waitReady(t)
	id := func(in *instance) int64 {
		t.Helper()
		st, body := in.postBody(t, "/posts", `{"author":"ann","message":"hi"}`)
		var p struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal([]byte(body), &p); st != http.StatusCreated || err != nil {
			t.Fatalf("POST /posts: %d %s", st, body)
		}
		return p.ID
	}
	var before int64
	for range 3 {
		before = id(in)
	}
	in = restartHerald(t, in, os.Interrupt)
	if after := id(in); after <= before || after >= 1<<53 {
		t.Fatalf("first id after a restart: %d, want above %d (the last before) and below 2^53", after, before)
	}
}
