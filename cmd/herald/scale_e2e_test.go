package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// monitor counts, with Redis' own MONITOR, the commands that mention a
// key or channel starting with prefix, so the test checks what Herald
// really asked of Redis rather than trusting Herald's word. It speaks
// RESP on a plain connection: MONITOR replies are one line per command.
type monitor struct {
	mu    sync.Mutex
	lines []string
}

func startMonitor(t *testing.T, client *redis.Client, prefix string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", client.Options().Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("*1\r\n$7\r\nMONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	m := &monitor{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); strings.Contains(line, prefix) {
				m.mu.Lock()
				m.lines = append(m.lines, line)
				m.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	// MONITOR starts asynchronously: wait until it sees a command of ours.
	m.sync(t, client, prefix)
	return m
}

// sync waits until the monitor has seen every command sent before it:
// Redis reports commands to monitors in the order it runs them.
func (m *monitor) sync(t *testing.T, client *redis.Client, prefix string) {
	t.Helper()
	marker := fmt.Sprintf("%s-sync-%d", prefix, time.Now().UnixNano())
	deadline := time.Now().Add(wait)
	for {
		if err := client.Echo(context.Background(), marker).Err(); err != nil {
			t.Fatal(err)
		}
		if m.count(marker) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("MONITOR saw nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (m *monitor) count(substr string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.lines {
		// Commands a Lua script runs show as the script spelled them.
		if strings.Contains(strings.ToLower(l), strings.ToLower(substr)) {
			n++
		}
	}
	return n
}

func (c *client) whoami() string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"whoami"}`)); err != nil {
		c.t.Fatal(err)
	}
	got := c.next()
	if got["type"] != "whoami" {
		c.t.Fatalf("whoami answered %v", got)
	}
	return got["channel"].(string)
}

func numsub(t *testing.T, client *redis.Client, channel string) int64 {
	t.Helper()
	n, err := client.PubSubNumSub(context.Background(), channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n[channel]
}

// TestThreeInstances checks the cross-instance semantics with three herald
// processes on one Redis.
func TestThreeInstances(t *testing.T) {
	t.Parallel()
	ru := redisURL(t)
	prefix := layertest.Prefix(t)
	opt, _ := redis.ParseURL(ru)
	rc := redis.NewClient(opt)
	defer rc.Close()

	env := []string{"REDIS_URL=" + ru, "HERALD_REDIS_PREFIX=" + prefix}
	insts := []*instance{startHerald(t, env...), startHerald(t, env...), startHerald(t, env...)}
	var clients []*client
	var channels []string
	for _, in := range insts {
		in.waitReady(t)
		for range 2 {
			c := dialNotifications(t, in.addr)
			clients = append(clients, c)
			channels = append(channels, c.whoami())
		}
	}
	groupTopic := prefix + ":group:gossip"
	if n := numsub(t, rc, groupTopic); n != 3 {
		t.Fatalf("%d instances subscribed to %s, want 3 (one per instance, not per member)", n, groupTopic)
	}
	mon := startMonitor(t, rc, prefix)

	// A group send from any instance reaches every member on all three,
	// as one PUBLISH.
	for i, in := range insts {
		if st := in.post(t, "/api/groups/gossip/send", fmt.Sprintf(`{"type":"name.gossip","n":%d}`, i)); st != http.StatusAccepted {
			t.Fatalf("group send via instance %d: %d", i, st)
		}
		for j, c := range clients {
			if got := c.next(); got["n"] != float64(i) {
				t.Fatalf("client %d got %v, want n=%d", j, got, i)
			}
		}
	}
	mon.sync(t, rc, prefix)
	if n := mon.count(`"publish" "` + groupTopic + `"`); n != 3 {
		t.Fatalf("Redis saw %d PUBLISH to %s for 3 group sends to 6 members on 3 instances, want 3", n, groupTopic)
	}

	// A send to one connection's channel reaches it, whichever instance
	// it sits on and whichever instance the send goes through.
	for j, ch := range channels {
		via := insts[(j/2+1)%3] // never the connection's own instance
		body := fmt.Sprintf(`{"type":"name.gossip","to":%d}`, j)
		if st := via.post(t, "/api/channels/"+ch+"/send", body); st != http.StatusAccepted {
			t.Fatalf("send to %s: %d", ch, st)
		}
		if got := clients[j].next(); got["to"] != float64(j) {
			t.Fatalf("client %d got %v", j, got)
		}
	}
	// Nobody got anyone else's message: the next frame of every client is
	// this marker.
	if st := insts[0].post(t, "/api/groups/gossip/send", `{"type":"name.gossip","marker":true}`); st != http.StatusAccepted {
		t.Fatal(st)
	}
	for j, c := range clients {
		if got := c.next(); got["marker"] != true {
			t.Fatalf("client %d got a stray frame %v", j, got)
		}
	}

	// An instance with no member of the group leaves its Redis channel, so
	// it receives none of the group's traffic.
	clients[4].conn.Close(websocket.StatusNormalClosure, "")
	clients[5].conn.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(wait)
	for numsub(t, rc, groupTopic) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("instance 2 still subscribed to %s after its last member left", groupTopic)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := insts[2].post(t, "/api/groups/gossip/send", `{"type":"name.gossip","after":true}`); st != http.StatusAccepted {
		t.Fatalf("group send via the memberless instance: %d", st)
	}
	for j, c := range clients[:4] {
		if got := c.next(); got["after"] != true {
			t.Fatalf("client %d got %v", j, got)
		}
	}
}

// TestResumeOnRedisCluster checks history on a Redis Cluster from the
// outside: a client of one instance leaves, messages are sent through
// another, and the client, back with the last id it saw, gets them in
// order and then the live stream.
func TestResumeOnRedisCluster(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	env := []string{"REDIS_CLUSTER_ADDRS=" + strings.Join(cluster.Addrs(), ","), "HERALD_REDIS_PREFIX=" + layertest.Prefix(t)}
	a, b := startHerald(t, env...), startHerald(t, env...)
	c := dialNotifications(t, a.addr)
	joinedEverywhere(t, b)
	send := func(n int) {
		t.Helper()
		body := fmt.Sprintf(`{"type":"name.gossip","event":"New Post","sender":"s","message":"m%d"}`, n)
		if st := b.post(t, "/api/groups/gossip/send", body); st != http.StatusAccepted {
			t.Fatalf("send %d: %d", n, st)
		}
	}
	send(1)
	first := c.next()
	since, _ := first["herald_id"].(string)
	if first["message"] != "m1" || since == "" {
		t.Fatalf("first frame %v: want m1 with a herald_id", first)
	}
	c.conn.CloseNow()
	for n := 2; n <= 4; n++ {
		send(n) // "sent" or "kept": both are in the history
	}
	c = dialNotificationsPath(t, a.addr, "/notifications/?since="+since)
	joinedEverywhere(t, b)
	send(5)
	last, _ := channellayer.ParseID(since)
	for n := 2; n <= 5; n++ {
		f := c.next()
		id, err := channellayer.ParseID(fmt.Sprint(f["herald_id"]))
		if f["message"] != fmt.Sprintf("m%d", n) || err != nil || id.Compare(last) <= 0 {
			t.Fatalf("after resuming, frame %v; want m%d with an id after %s", f, n, last)
		}
		last = id
	}
}
