package channellayer_test

import (
	"context"
	"encoding/json"

	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// TestRedisClusterDeposedMaster freezes the master of a group with
// history while a send waits on it, and lets its replica take over. The
// same send, retried with its key, is applied by the new master, whose
// history never held the first attempt. When the old master continues,
// it runs the waiting send before it learns that it was replaced, and
// forwards the publication to its shard over the cluster bus: the new
// master hands it to its own subscribers. The member must not get that
// copy, which no history holds and which repeats a message it has.
func TestRedisClusterDeposedMaster(t *testing.T) {
	cluster := layertest.StartClusterWithReplicas(t, 3)
	w := watchHistory(t, cluster, "hist.deposed")
	w.mustSend(0)
	w.expect(0)
	master := w.master()
	cluster.WaitReplicated(t, master)
	var node *layertest.RedisServer
	for _, n := range cluster.Nodes {
		if n.Addr == master {
			node = n
		}
	}
	// A publisher that waits long on the frozen master, so that its send
	// is still queued there when the master continues.
	slow := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ReadTimeout: 20 * time.Second, MaxRedirects: -1})
	t.Cleanup(func() { _ = slow.Close() })
	prefix := strings.TrimSuffix(w.topic, ":group:"+w.group)
	slowPub, err := channellayer.NewRedisCluster(slow, channellayer.RedisConfig{Prefix: prefix, History: layertest.History})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slowPub.Close() })
	if _, err := slowPub.GroupSend(context.Background(), w.group, layertest.Msg(t, "m", 1)); err != nil {
		t.Fatal(err) // the slow publisher knows the slot map
	}
	w.expect(1)

	node.Pause()
	pausedAt := time.Now()
	paused := true
	t.Cleanup(func() {
		if paused {
			node.Continue()
		}
	})
	queued := make(chan error, 1)
	go func() {
		_, err := slowPub.GroupSend(context.Background(), w.group, layertest.Msg(t, "q", 0).WithKey("q"))
		queued <- err
	}()
	w.sendAfterFailover(cluster, 2)
	t.Logf("a send succeeded %v after the master froze", time.Since(pausedAt).Round(time.Millisecond))
	w.expect(2)
	// The caller's retry of the waiting send, with its key, on the new
	// master.
	if _, err := w.pub.GroupSend(context.Background(), w.group, layertest.Msg(t, "q", 0).WithKey("q")); err != nil {
		t.Fatalf("retry of q: %v", err)
	}
	seen := map[string]int{}
	next := func() layertest.Delivery {
		t.Helper()
		d := w.in.Next(t)
		var f struct{ N int }
		_ = json.Unmarshal(d.Data, &f)
		key := fmt.Sprintf("%s/%d", d.Type, f.N)
		seen[key]++
		if seen[key] > 1 {
			t.Fatalf("%s delivered twice: %s (id %s)", key, d.Data, d.ID)
		}
		return d
	}
	if d := next(); d.Type != "q" {
		t.Fatalf("got %s, want q", d.Data)
	}
	w.mustSend(3)
	if d := next(); !strings.HasPrefix(string(d.Data), `{"n":3,`) {
		t.Fatalf("got %s, want message 3", d.Data)
	}

	node.Continue()
	paused = false
	err = <-queued
	t.Logf("the send queued on the frozen master returned %v", err)
	waitUntil(t, "the old master to become a replica", func() bool {
		c := redis.NewClient(&redis.Options{Addr: master})
		defer c.Close()
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "role:slave")
	})
	w.mustSend(4)
	for {
		d := next()
		if d.Type == channellayer.ResyncType {
			t.Fatalf("resync %s: nothing accepted was lost", d.Data)
		}
		if strings.HasPrefix(string(d.Data), `{"n":4,`) {
			break
		}
		if d.Type != "q" {
			t.Fatalf("got %s, want message 4", d.Data)
		}
	}
	if d, ok := w.in.Poll(300 * time.Millisecond); ok {
		t.Fatalf("unexpected %s after message 4", d.Data)
	}

}

// TestRedisClusterSlotMoveNoHistory moves the slot of a group without
// history to another master. What is published there before this
// instance follows the slot reaches nobody here and cannot be recovered,
// so the member is told to resync before the next message, and a send
// through this instance meanwhile is refused rather than answered as
// delivered.
func TestRedisClusterSlotMoveNoHistory(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	w := watchHistory(t, cluster, "live.move")
	w.mustSend(0)
	if d := w.in.Next(t); !strings.HasPrefix(string(d.Data), `{"n":0,`) {
		t.Fatalf("got %s, want message 0", d.Data)
	}
	slot, err := w.cc.ClusterKeySlot(context.Background(), w.topic).Result()
	if err != nil {
		t.Fatal(err)
	}
	to := cluster.Nodes[0].Addr
	if to == w.master() {
		to = cluster.Nodes[1].Addr
	}
	cluster.MoveSlot(t, int(slot), to, func() {
		_ = w.send(1) // reaches nobody: nobody listens on the new master yet
	})
	// Once this instance follows the slot, a send reaches its member.
	deadline := time.Now().Add(layertest.Timeout)
	for {
		_, err := w.pub.GroupSend(context.Background(), w.group, layertest.Msg(t, "m", 2))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("send 2 after the move: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the move, bounded by deadline
	}
	d := w.in.Next(t)
	if d.Type != channellayer.ResyncType || !strings.Contains(string(d.Data), `"group":"live.move"`) {
		t.Fatalf("got %s, want a resync naming live.move before the next message", d.Data)
	}
	for {
		d := w.in.Next(t)
		if strings.HasPrefix(string(d.Data), `{"n":2,`) {
			break
		}
		if !strings.HasPrefix(string(d.Data), `{"n":1,`) {
			t.Fatalf("got %s, want message 2", d.Data)
		}
	}
	w.in.Empty(t)
}
