package channellayer_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// TestMovedTo: the MOVED reply a real cluster gives to a sharded
// subscription on a master that does not own the channel's slot is read
// as that slot and its owner. It fails if go-redis stops recognizing
// the reply or Redis words it otherwise.
func TestMovedTo(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := clusterClient(t, cluster)
	const topic = "moved-test"
	slot, err := cc.ClusterKeySlot(ctx, topic).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := cc.MasterForKey(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ownerAddr := owner.Options().Addr
	for _, addr := range cluster.Addrs() {
		if addr == ownerAddr {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		ps := c.SSubscribe(ctx, topic)
		defer ps.Close()
		_, err := ps.Receive(ctx)
		got, to, ok := channellayer.MovedTo(err)
		if !ok || int64(got) != slot || to != ownerAddr {
			t.Errorf("MovedTo(%v) = %d, %q, %v; want slot %d owned by %s", err, got, to, ok, slot, ownerAddr)
		}
		if _, _, ok := channellayer.MovedTo(redis.ErrClosed); ok {
			t.Error("MovedTo took an error that is no MOVED")
		}
		return
	}
	t.Fatalf("no master other than %s among %v", ownerAddr, cluster.Addrs())
}
