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

// TestRedisClusterSlotMove moves the slot of a group with history to
// another master. Messages sent once the new master serves the slot, but
// before the old one lets go of this instance's subscription, reach
// nobody live; the instance recovers them from the history when it
// follows the slot, in order and once, and then gets the live stream from
// the new master.
func TestRedisClusterSlotMove(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	ctx := context.Background()
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), History: layertest.History}
	cc := clusterClient(t, cluster)
	l, err := channellayer.NewRedisCluster(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pub, err := channellayer.NewRedisCluster(clusterClient(t, cluster), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const group = "hist.move"
	in := layertest.NewInbox(16)
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx, group, ch); err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		t.Helper()
		// Kept is fine: between the two halves of the move nobody listens
		// on the new owner.
		if err := pub.GroupSend(ctx, group, layertest.Msg(t, "m", i)); err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	expect := func(i int) {
		t.Helper()
		if d := in.Next(t); d.Type != "m" || !strings.HasPrefix(string(d.Data), fmt.Sprintf(`{"n":%d,`, i)) || d.ID == "" {
			t.Fatalf("got %s (id %q), want message %d with an id", d.Data, d.ID, i)
		}
	}
	send(0)
	expect(0)

	slot, err := cc.ClusterKeySlot(ctx, cfg.Prefix+":group:"+group).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := cc.MasterForKey(ctx, cfg.Prefix+":group:"+group)
	if err != nil {
		t.Fatal(err)
	}
	to := cluster.Nodes[0].Addr
	if to == owner.Options().Addr {
		to = cluster.Nodes[1].Addr
	}
	cluster.MoveSlot(t, int(slot), to, func() {
		send(1)
		send(2)
	})
	expect(1)
	expect(2)
	send(3)
	expect(3)
	in.Empty(t)
}

// TestRedisClusterFailover kills the master of a group with history;
// its replica takes over. The instance follows the group to the new
// master, and its member gets every message sent once the new master
// took over, in order and once.
func TestRedisClusterFailover(t *testing.T) {
	cluster := layertest.StartClusterWithReplicas(t, 3)
	ctx := context.Background()
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), History: layertest.History}
	cc := clusterClient(t, cluster)
	l, err := channellayer.NewRedisCluster(cc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pub, err := channellayer.NewRedisCluster(clusterClient(t, cluster), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const group = "hist.failover"
	in := layertest.NewInbox(16)
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx, group, ch); err != nil {
		t.Fatal(err)
	}
	expect := func(i int) {
		t.Helper()
		if d := in.Next(t); d.Type != "m" || !strings.HasPrefix(string(d.Data), fmt.Sprintf(`{"n":%d,`, i)) || d.ID == "" {
			t.Fatalf("got %s (id %q), want message %d with an id", d.Data, d.ID, i)
		}
	}
	if err := pub.GroupSend(ctx, group, layertest.Msg(t, "m", 0)); err != nil {
		t.Fatal(err)
	}
	expect(0)

	master, err := cc.MasterForKey(ctx, cfg.Prefix+":group:"+group)
	if err != nil {
		t.Fatal(err)
	}
	// The replica must have message 0, or it loses it when it takes over
	// and the instance, rightly, tells its member to resync.
	cluster.WaitReplicated(t, master.Options().Addr)
	for _, n := range cluster.Nodes {
		if n.Addr == master.Options().Addr {
			n.Kill()
		}
	}
	// Sends fail until a replica has taken over; the first that does not
	// is message 1. Kept is fine: this instance may not be back yet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := pub.GroupSend(ctx, group, layertest.Msg(t, "m", 1))
		if err == nil || errors.Is(err, channellayer.ErrNoReceivers) {
			break
		}
		if time.Now().After(deadline) {
			cluster.LogState(t)
			t.Fatalf("no replica took over within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling the failover, bounded by deadline
	}
	for i := 2; i <= 3; i++ {
		if err := pub.GroupSend(ctx, group, layertest.Msg(t, "m", i)); err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	for i := 1; i <= 3; i++ {
		expect(i)
	}
	in.Empty(t)
}
