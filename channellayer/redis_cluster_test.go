package channellayer_test

import (
	"context"
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
		if err := l.GroupSend(ctx, groupName(i), layertest.Msg(t, "x", i)); err != nil {
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
	err := w.pub.GroupSend(context.Background(), w.group, layertest.Msg(w.t, "m", i))
	if errors.Is(err, channellayer.ErrNoReceivers) {
		return nil
	}
	return err
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.send(1)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cluster.LogState(t)
			t.Fatalf("no replica took over within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the failover, bounded by deadline
	}
	w.mustSend(2)
	w.mustSend(3)
	for i := 1; i <= 3; i++ {
		w.expect(i)
	}
	w.in.Empty(t)
}
