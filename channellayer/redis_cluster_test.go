package channellayer_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"

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
