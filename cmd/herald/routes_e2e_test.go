package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/notifier/pgtest"
)

// TestBridgedRowsReachRoutesThatForwardThem: rows of a bridged table
// reach the clients of a route that forwards their type, by WebSocket
// and by event stream, while a client of the demo route in the same
// group is not sent them and the drop is counted.
func TestBridgedRowsReachRoutesThatForwardThem(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric)"); err != nil {
		t.Fatal(err)
	}
	in := startHerald(t, "DATABASE_URL="+db, "HERALD_BRIDGES=orders:orders:order.created",
		"HERALD_PUBLIC_GROUPS=gossip,orders",
		"HERALD_ROUTES=/notifications/ join=gossip types=name.gossip; /events/ subscribe=orders types=order.*")
	in.waitReady(t)

	events := dialNotificationsPath(t, in.addr, "/events/")
	demo := dialNotifications(t, in.addr)
	for _, c := range []*client{events, demo} {
		c.send(`{"type":"subscribe","group":"orders"}`)
		if got := c.next(); got["type"] != "subscribed" {
			t.Fatalf("subscribe orders: %v", got)
		}
	}
	// The /events/ route lets its clients ask for orders alone.
	events.send(`{"type":"subscribe","group":"gossip"}`)
	if got := events.next(); got["code"] != "forbidden" {
		t.Fatalf("subscribe gossip on /events/: %v, want forbidden", got)
	}
	stream := openStream(t, in.addr, "/events/?groups=orders")

	if _, err := conn.Exec(ctx, "INSERT INTO orders (total) VALUES (12.5)"); err != nil {
		t.Fatal(err)
	}
	if got := events.next(); got["type"] != "order.created" || got["id"] != float64(1) || got["total"] != 12.5 {
		t.Fatalf("WebSocket on /events/ got %v, want the order", got)
	}
	if got := stream.next(t); got["type"] != "order.created" || got["id"] != float64(1) {
		t.Fatalf("event stream on /events/ got %v, want the order", got)
	}
	// The demo client was handed the order too, and dropped it: once
	// counted, a post is the very next frame it reads.
	deadline := time.Now().Add(wait)
	for scrape(t, in.addr, "")[`herald_messages_dropped_total{reason="not_forwarded"}`] < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the order dropped on /notifications/ was not counted as not_forwarded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","message":"after"}`); st != http.StatusAccepted {
		t.Fatalf("group send: %d", st)
	}
	if got := demo.next(); got["message"] != "after" {
		t.Fatalf("demo client got %v, want the post and never the order", got)
	}
}

// eventStream reads server-sent events.
type eventStream struct{ sc *bufio.Scanner }

func openStream(t *testing.T, addr, path string) *eventStream {
	t.Helper()
	// The stream's deadline bounds every wait for an event.
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return &eventStream{sc: bufio.NewScanner(resp.Body)}
}

// next returns the data of the next event.
func (s *eventStream) next(t *testing.T) map[string]any {
	t.Helper()
	for s.sc.Scan() {
		data, ok := strings.CutPrefix(s.sc.Text(), "data:")
		if !ok {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(data)), &m); err != nil {
			t.Fatalf("event %s: %v", data, err)
		}
		return m
	}
	t.Fatalf("event stream ended: %v", s.sc.Err())
	return nil
}
