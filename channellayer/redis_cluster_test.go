package channellayer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// clusterClient returns a client for the cluster, closed when t ends.
func clusterClient(t *testing.T, c *layertest.RedisCluster) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestRedisCluster(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	var mu sync.Mutex
	prefixes := map[*testing.T]string{}
	layertest.Run(t, func(t *testing.T) channellayer.Layer {
		mu.Lock()
		p, ok := prefixes[t]
		if !ok {
			p = layertest.Prefix(t)
			prefixes[t] = p
		}
		mu.Unlock()
		l, err := channellayer.NewRedisCluster(clusterClient(t, cluster), channellayer.RedisConfig{Prefix: p, History: layertest.History})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
	t.Run("GroupLimit", func(t *testing.T) {
		l, err := channellayer.NewRedisCluster(clusterClient(t, cluster), channellayer.RedisConfig{Prefix: layertest.Prefix(t), MaxGroups: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		layertest.GroupLimit(t, l, 3)
	})
}

// TestRedisClusterShards checks that a group's traffic goes only through
// the master that owns its slot, as Redis itself counts it.
func TestRedisClusterShards(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	ctx := context.Background()
	cc := clusterClient(t, cluster)
	l, err := channellayer.NewRedisCluster(cc, channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	in := layertest.NewInbox(64)
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	// Enough groups that every master owns some.
	const n = 24
	for i := range n {
		if err := l.GroupAdd(ctx, groupName(i), ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range cluster.Nodes {
		c := redis.NewClient(&redis.Options{Addr: node.Addr})
		defer c.Close()
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if _, err := l.GroupSend(ctx, groupName(i), layertest.Msg(t, "x", i)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		in.Next(t)
	}
	// Each master ran SPUBLISH once for each group whose slot it owns,
	// and no PUBLISH at all.
	total := 0
	for _, node := range cluster.Nodes {
		c := redis.NewClient(&redis.Options{Addr: node.Addr})
		defer c.Close()
		stats, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		sp := commandCalls(stats, "spublish")
		if commandCalls(stats, "publish") != 0 {
			t.Errorf("%s ran PUBLISH", node.Addr)
		}
		if sp == 0 {
			t.Errorf("%s ran no SPUBLISH: traffic is not spread over the shards", node.Addr)
		}
		total += sp
	}
	if total != n {
		t.Errorf("masters ran %d SPUBLISH in all, want %d", total, n)
	}
}

func groupName(i int) string { return "shard-" + string(rune('a'+i%26)) + string(rune('a'+i/26)) }

// commandCalls reads calls=N of one command from INFO commandstats.
func commandCalls(info, cmd string) int {
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// historyWatch is a member of a group with history on one instance of a
// cluster, and a second instance that sends to the group.
type historyWatch struct {
	t     *testing.T
	cc    *redis.ClusterClient // the member's instance's client
	pub   channellayer.Layer
	in    *layertest.Inbox
	group string
	topic string // the group's shard channel
}

func watchHistory(t *testing.T, cluster *layertest.RedisCluster, group string) *historyWatch {
	t.Helper()
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), History: layertest.History}
	w := &historyWatch{t: t, cc: clusterClient(t, cluster), in: layertest.NewInbox(16), group: group, topic: cfg.Prefix + ":group:" + group}
	l, err := channellayer.NewRedisCluster(w.cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	pub, err := channellayer.NewRedisCluster(clusterClient(t, cluster), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	w.pub = pub
	ch, err := l.NewChannel(w.in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(context.Background(), group, ch); err != nil {
		t.Fatal(err)
	}
	return w
}

// send sends message i. Kept (no member reached) counts as sent: while
// the member's instance is between two masters, nobody listens on the
// new one.
func (w *historyWatch) send(i int) error {
	_, err := w.pub.GroupSend(context.Background(), w.group, layertest.Msg(w.t, "m", i))
	if errors.Is(err, channellayer.ErrNoReceivers) {
		return nil
	}
	return err
}

// sendAfterFailover sends message i until a send goes through, which
// it does once a replica has taken over the master that failed; it
// fails the test after 30 s.
func (w *historyWatch) sendAfterFailover(cluster *layertest.RedisCluster, i int) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.send(i)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			cluster.LogState(w.t)
			w.t.Fatalf("no replica took over within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the failover, bounded by deadline
	}
}

func (w *historyWatch) mustSend(i int) {
	w.t.Helper()
	if err := w.send(i); err != nil {
		w.t.Fatalf("send %d: %v", i, err)
	}
}

// expect checks that the member's next message is message i, with an id.
func (w *historyWatch) expect(i int) {
	w.t.Helper()
	if d := w.in.Next(w.t); d.Type != "m" || !strings.HasPrefix(string(d.Data), fmt.Sprintf(`{"n":%d,`, i)) || d.ID == "" {
		w.t.Fatalf("got %s (id %q), want message %d with an id", d.Data, d.ID, i)
	}
}

// master returns the address of the master that owns the group.
func (w *historyWatch) master() string {
	w.t.Helper()
	m, err := w.cc.MasterForKey(context.Background(), w.topic)
	if err != nil {
		w.t.Fatal(err)
	}
	return m.Options().Addr
}

// TestRedisClusterSlotMove moves the slot of a group with history to
// another master. Messages sent once the new master serves the slot, but
// before the old one lets go of this instance's subscription, reach
// nobody live; the instance recovers them from the history when it
// follows the slot, in order and once, and then gets the live stream from
// the new master.
func TestRedisClusterSlotMove(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	w := watchHistory(t, cluster, "hist.move")
	w.mustSend(0)
	w.expect(0)

	slot, err := w.cc.ClusterKeySlot(context.Background(), w.topic).Result()
	if err != nil {
		t.Fatal(err)
	}
	to := cluster.Nodes[0].Addr
	if to == w.master() {
		to = cluster.Nodes[1].Addr
	}
	cluster.MoveSlot(t, int(slot), to, func() {
		w.mustSend(1)
		w.mustSend(2)
	})
	w.expect(1)
	w.expect(2)
	w.mustSend(3)
	w.expect(3)
	w.in.Empty(t)
}

// TestRedisClusterFailover kills the master of a group with history;
// its replica takes over. The instance follows the group to the new
// master, and its member gets every message sent once the new master
// took over, in order and once.
func TestRedisClusterFailover(t *testing.T) {
	cluster := layertest.StartClusterWithReplicas(t, 3)
	w := watchHistory(t, cluster, "hist.failover")
	w.mustSend(0)
	w.expect(0)

	master := w.master()
	// The replica must have message 0, or it loses it when it takes over
	// and the instance, rightly, tells its member to resync.
	cluster.WaitReplicated(t, master)
	for _, n := range cluster.Nodes {
		if n.Addr == master {
			n.Kill()
		}
	}
	// Sends fail until a replica has taken over; the first that does not
	// is message 1.
	w.sendAfterFailover(cluster, 1)
	w.mustSend(2)
	w.mustSend(3)
	for i := 1; i <= 3; i++ {
		w.expect(i)
	}
	w.in.Empty(t)
}

// TestRedisClusterFrozenMaster freezes the master of a group with
// history (SIGSTOP): its connections stay open and silent. The member's
// instance must notice within its health timeout, follow the group to
// the replica that takes over, and deliver what is sent there. When the
// old master continues, it runs the sends queued on it before it steps
// down; they must not reach the member a second time.
func TestRedisClusterFrozenMaster(t *testing.T) {
	cluster := layertest.StartClusterWithReplicas(t, 3)
	w := watchHistory(t, cluster, "hist.frozen")
	// The publisher gives up on the frozen master quickly, so that the
	// new master takes sends while the old one is still frozen.
	fast := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ReadTimeout: 300 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { _ = fast.Close() })
	pub, err := channellayer.NewRedisCluster(fast, channellayer.RedisConfig{Prefix: strings.TrimSuffix(w.topic, ":group:"+w.group), History: layertest.History})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	w.pub = pub
	// An instance with go-redis' defaults, for its readiness check.
	checker, err := channellayer.NewRedisCluster(clusterClient(t, cluster), channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = checker.Close() })
	waitCheck(t, checker, true)
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
	node.Pause()
	pausedAt := time.Now()
	paused := true
	t.Cleanup(func() {
		if paused {
			node.Continue()
		}
	})
	// A send made now waits on the frozen master; go-redis gives up on
	// it, or sends it again elsewhere once the slot map moved.
	queued := make(chan error, 1)
	go func() {
		_, err := w.pub.GroupSend(context.Background(), w.group, layertest.Msg(t, "q", 0))
		queued <- err
	}()

	// Check answers promptly while a master is frozen.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = checker.Check(ctx)
	cancel()
	t.Logf("Check while a master is frozen: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Check took %v while a master was frozen, want about 1 s at most", d)
	}

	w.sendAfterFailover(cluster, 1)
	took := time.Now()
	t.Logf("a send succeeded %v after the master froze", took.Sub(pausedAt).Round(time.Millisecond))
	w.mustSend(2)
	seen := map[string]int{}
	next := func() layertest.Delivery {
		t.Helper()
		for {
			d := w.in.Next(t)
			var f struct{ N int }
			_ = json.Unmarshal(d.Data, &f)
			key := fmt.Sprintf("%s/%d", d.Type, f.N)
			seen[key]++
			if seen[key] > 1 {
				t.Fatalf("%s delivered twice: %s", key, d.Data)
			}
			if d.Type != "q" {
				return d
			}
		}
	}
	for i := 1; i <= 2; i++ {
		if d := next(); !strings.HasPrefix(string(d.Data), fmt.Sprintf(`{"n":%d,`, i)) {
			t.Fatalf("got %s, want message %d", d.Data, i)
		}
	}
	t.Logf("the member got the new master's messages %v after it took over", time.Since(took).Round(time.Millisecond))

	node.Continue()
	paused = false
	t.Logf("the send queued on the frozen master returned %v", <-queued)
	// Wait for the old master to step down: until then it may run and
	// publish what was queued on it.
	waitUntil(t, "the old master to become a replica", func() bool {
		c := redis.NewClient(&redis.Options{Addr: master})
		defer c.Close()
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "role:slave")
	})
	w.mustSend(3)
	if d := next(); !strings.HasPrefix(string(d.Data), `{"n":3,`) {
		t.Fatalf("got %s, want message 3", d.Data)
	}
	// Nothing more, except the queued send if it had not come yet.
	for {
		d, ok := w.in.Poll(300 * time.Millisecond)
		if !ok {
			break
		}
		seen[d.Type]++
		if d.Type != "q" || seen["q/0"]+seen["q"] > 1 {
			t.Fatalf("unexpected %s after message 3 (deliveries %v)", d.Data, seen)
		}
	}
	t.Logf("deliveries: %v", seen)
}
