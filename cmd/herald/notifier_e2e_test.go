package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier/pgtest"
)

// TestNotifierSurvivesKilledInstance runs three instances on one Redis
// and one Postgres, with clients on each, and kills one with SIGKILL in
// the middle of a burst of inserts. Every client gets every committed
// post exactly once, in commit order: those of the instances left on
// their connection, those of the killed one by reconnecting to another
// instance with the last id they saw, as herald.js does.
func TestNotifierSurvivesKilledInstance(t *testing.T) {
	t.Parallel()
	ru := redisURL(t)
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A second bridged table: three instances install both triggers at
	// once at start, which must not trip over each other.
	if _, err := conn.Exec(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric)"); err != nil {
		t.Fatal(err)
	}

	env := []string{
		"REDIS_URL=" + ru, "DATABASE_URL=" + db, "HERALD_REDIS_PREFIX=" + layertest.Prefix(t),
		"HERALD_QUEUE_BYTES=16777216", "HERALD_BRIDGES=orders:orders:order.created",
	}
	instances := []*instance{startHerald(t, env...), startHerald(t, env...), startHerald(t, env...)}
	var clients [][]*client // per instance
	for _, in := range instances {
		in.waitReady(t)
		clients = append(clients, []*client{dialNotifications(t, in.addr), dialNotifications(t, in.addr)})
	}
	joinedEverywhere(t, instances...)
	// A first message gives every client an id to resume from.
	if st := instances[0].post(t, "/api/groups/gossip/send", `{"type":"name.gossip","message":"start"}`); st != http.StatusAccepted {
		t.Fatalf("group send: %d", st)
	}
	var startID string
	for _, cs := range clients {
		for _, c := range cs {
			got := c.next()
			startID, _ = got["herald_id"].(string)
			if got["message"] != "start" || startID == "" {
				t.Fatalf("first frame %v, want the start message with an id", got)
			}
		}
	}

	const n = 600
	type post struct {
		id  int64
		msg string
	}
	committed := make(chan post, n)
	writerErr := make(chan error, 1)
	go func() {
		for i := range n {
			p := post{msg: fmt.Sprint("burst ", i)}
			if err := conn.QueryRow(ctx, "INSERT INTO posts (author, message) VALUES ('db', $1) RETURNING id", p.msg).Scan(&p.id); err != nil {
				writerErr <- err
				return
			}
			committed <- p
		}
		writerErr <- nil
	}()

	// Kill the third instance once a third of the burst is committed.
	var want []post
	for len(want) < n/3 {
		select {
		case p := <-committed:
			want = append(want, p)
		case err := <-writerErr:
			t.Fatalf("writer stopped early: %v", err)
		case <-time.After(wait):
			t.Fatal("writer stalled")
		}
	}
	if err := instances[2].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}
	close(committed)
	for p := range committed {
		want = append(want, p)
	}

	// The killed instance's clients read what reached them, then resume
	// on the first instance from the last id they saw.
	var got [][]map[string]any // per client of the killed instance
	for j, c := range clients[2] {
		frames := c.untilClosed()
		last := startID
		if len(frames) > 0 {
			last, _ = frames[len(frames)-1]["herald_id"].(string)
		}
		clients[2][j] = dialNotificationsPath(t, instances[0].addr, "/notifications/?since="+last)
		got = append(got, frames)
	}
	joinedEverywhere(t, instances[0])

	for i, in := range instances {
		for j, c := range clients[i] {
			var frames []map[string]any
			if i == 2 {
				frames = got[j]
			}
			for k, w := range want {
				var f map[string]any
				if k < len(frames) {
					f = frames[k]
				} else {
					f = c.next()
				}
				if f["type"] != "name.gossip" || f["id"] != float64(w.id) || f["message"] != w.msg {
					t.Fatalf("instance %s client %d, frame %d: got %v, want post %d %q", in.addr, j, k, f, w.id, w.msg)
				}
			}
		}
	}
	t.Logf("the killed instance's clients got %d and %d posts before it died", len(got[0]), len(got[1]))
	// Nothing twice: a final group send is the very next frame.
	if st := instances[0].post(t, "/api/groups/gossip/send", `{"type":"name.gossip","message":"end"}`); st != http.StatusAccepted {
		t.Fatalf("group send: %d", st)
	}
	for i := range instances {
		for _, c := range clients[i] {
			if got := c.next(); got["message"] != "end" {
				t.Fatalf("duplicate or stray frame: %v", got)
			}
		}
	}
	var triggers int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger
		WHERE tgname = 'herald_log_row' AND tgrelid IN ('posts'::regclass, 'orders'::regclass)`).Scan(&triggers); err != nil || triggers != 2 {
		t.Errorf("%d log triggers (err %v), want one on posts and one on orders", triggers, err)
	}
}

// dialNotificationsPath is dialNotifications with a path of its own, such
// as one that resumes.
func dialNotificationsPath(t *testing.T, addr, path string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &client{t: t, conn: c}
}

// untilClosed returns the frames c reads until its connection fails.
func (c *client) untilClosed() []map[string]any {
	c.t.Helper()
	var frames []map[string]any
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, data, err := c.conn.Read(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			c.t.Fatal("the connection stayed open")
		}
		if err != nil {
			return frames
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			c.t.Fatalf("frame %s: %v", data, err)
		}
		frames = append(frames, m)
	}
}
