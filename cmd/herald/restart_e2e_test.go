package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// reconnectJitter is the most a test client waits before reconnecting
// after a 1012, as the web page does.
const reconnectJitter = 250 * time.Millisecond

// roamingClient stays connected to some instance: when one closes it
// with 1012 it moves to the next, as a browser behind a load balancer
// does, and records how long it was away.
type roamingClient struct {
	id       int
	addrs    func() []string
	mu       sync.Mutex
	got      map[string]bool
	away     []time.Duration
	closes   int
	reconns  atomic.Int32 // successful dials
	stop     chan struct{}
	done     chan struct{}
	failures []error
}

func (rc *roamingClient) run(start int) {
	defer close(rc.done)
	next := start
	var closedAt time.Time // when the last connection was closed with 1012
	for {
		select {
		case <-rc.stop:
			return
		default:
		}
		addrs := rc.addrs()
		addr := addrs[next%len(addrs)]
		next++
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/notifications/", nil)
		cancel()
		if err != nil {
			continue // that instance is between stop and start: try the next
		}
		if !closedAt.IsZero() {
			rc.mu.Lock()
			rc.away = append(rc.away, time.Since(closedAt))
			rc.mu.Unlock()
		}
		rc.reconns.Add(1)
		code := rc.read(c)
		c.CloseNow()
		closedAt = time.Now()
		select {
		case <-rc.stop:
			return
		default:
		}
		if code != websocket.StatusServiceRestart {
			rc.fail(fmt.Errorf("client %d: connection ended with %d, want 1012", rc.id, code))
			return
		}
		rc.mu.Lock()
		rc.closes++
		rc.mu.Unlock()
		// The client's own jitter before reconnecting, as the page's.
		time.Sleep(time.Duration(rand.Int64N(int64(reconnectJitter))))
	}
}

func (rc *roamingClient) read(c *websocket.Conn) websocket.StatusCode {
	for {
		_, data, err := c.Read(context.Background())
		if err != nil {
			return websocket.CloseStatus(err)
		}
		rc.mu.Lock()
		rc.got[string(data)] = true
		rc.mu.Unlock()
	}
}

func (rc *roamingClient) fail(err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.failures = append(rc.failures, err)
}

// has reports whether the client received a frame containing part;
// frames of groups with history also carry their herald_id.
func (rc *roamingClient) has(part string) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for frame := range rc.got {
		if strings.Contains(frame, part) {
			return true
		}
	}
	return false
}

// TestRollingRestart restarts three instances one after another while a
// publisher sends to the group: every client is told to go (1012), is back
// on another instance within its reconnect delay, and receives again.
func TestRollingRestart(t *testing.T) {
	t.Parallel()
	ru := redisURL(t)
	env := []string{"REDIS_URL=" + ru, "HERALD_REDIS_PREFIX=" + layertest.Prefix(t), "HERALD_SHUTDOWN_TIMEOUT=5s"}
	var mu sync.Mutex
	insts := []*instance{startHerald(t, env...), startHerald(t, env...), startHerald(t, env...)}
	addrs := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var a []string
		for _, in := range insts {
			a = append(a, in.addr)
		}
		return a
	}
	for _, in := range insts {
		in.waitReady(t)
	}

	const nClients = 9
	clients := make([]*roamingClient, nClients)
	for i := range clients {
		clients[i] = &roamingClient{id: i, addrs: addrs, got: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
		go clients[i].run(i)
	}
	t.Cleanup(func() {
		for _, c := range clients {
			close(c.stop)
		}
	})
	waitAll := func(what string, cond func(*roamingClient) bool) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for _, c := range clients {
			for !cond(c) {
				if time.Now().After(deadline) {
					t.Fatalf("client %d: timed out waiting for %s", c.id, what)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitAll("first connection", func(c *roamingClient) bool { return c.reconns.Load() >= 1 })

	// Live traffic throughout, through whichever instance answers.
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	var sent atomic.Int64
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for _, a := range addrs() {
				resp, err := http.Post("http://"+a+"/api/groups/gossip/send", "application/json",
					strings.NewReader(fmt.Sprintf(`{"type":"name.gossip","live":%d}`, i)))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted {
						sent.Add(1)
						break
					}
				}
			}
		}
	}()

	for i := range insts {
		fresh := restartHerald(t, insts[i], os.Interrupt, env...)
		mu.Lock()
		insts[i] = fresh
		mu.Unlock()
	}

	// Everyone is connected again and receives a final marker.
	marker := `{"type":"name.gossip","final":true}`
	deadline := time.Now().Add(wait)
	for {
		if insts[0].post(t, "/api/groups/gossip/send", marker) != http.StatusAccepted {
			t.Fatal("final send failed")
		}
		all := true
		for _, c := range clients {
			all = all && c.has(`"final":true`)
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not every client received the final marker")
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopPub)
	<-pubDone

	limit := reconnectJitter + 750*time.Millisecond
	for _, c := range clients {
		c.mu.Lock()
		for _, err := range c.failures {
			t.Error(err)
		}
		if c.closes == 0 {
			t.Errorf("client %d was never told to reconnect", c.id)
		}
		for _, d := range c.away {
			if d > limit {
				t.Errorf("client %d was away %v after a 1012, more than %v", c.id, d, limit)
			}
		}
		c.mu.Unlock()
	}
	t.Logf("%d live messages sent during the restarts", sent.Load())
}
