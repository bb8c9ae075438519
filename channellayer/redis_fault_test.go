package channellayer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// resubscribeBound is how soon after Redis returns every group with local
// members must receive again. The layer retries at most a second apart
// (RedisConfig.MaxBackoff), and a cluster reads its slot map first; the
// bound leaves room for a loaded machine, as it tells a layer that comes
// back from one that does not, not how fast it does.
const resubscribeBound = 5 * time.Second

// faultLayer is what the fault tests need of a Redis-backed layer.
type faultLayer interface {
	channellayer.Layer
	RedisStats() channellayer.RedisStats
}

func TestRedisFaults(t *testing.T) {
	for _, stop := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(stop, func(t *testing.T) {
			srv := layertest.StartRedis(t)
			client := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = client.Close() })
			l, err := channellayer.NewRedis(client, channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			outage(t, l, func() {
				if stop == "SIGTERM" {
					srv.Stop()
				} else {
					srv.Kill()
				}
			}, srv.Restart, groupNames(6))
		})
	}
}

func TestRedisUnreachableAtStart(t *testing.T) {
	srv := layertest.StartRedis(t)
	srv.Stop()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = client.Close() })
	l, err := channellayer.NewRedis(client, channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
	if err != nil {
		t.Fatalf("NewRedis with Redis down: %v", err)
	}
	defer l.Close()
	unreachableAtStart(t, l, srv.Restart)
}

func TestRedisClusterFaults(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	l, err := channellayer.NewRedisCluster(clusterClient(t, cluster), channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Enough groups that the stopped master owns some of them.
	node := cluster.Nodes[0]
	outage(t, l, node.Kill, func() {
		node.Restart()
	}, groupNames(12))
}

func TestRedisClusterUnreachableAtStart(t *testing.T) {
	cluster := layertest.StartCluster(t, 3)
	for _, n := range cluster.Nodes {
		n.Stop()
	}
	l, err := channellayer.NewRedisCluster(clusterClient(t, cluster), channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
	if err != nil {
		t.Fatalf("NewRedisCluster with the cluster down: %v", err)
	}
	defer l.Close()
	unreachableAtStart(t, l, func() {
		for _, n := range cluster.Nodes {
			n.Restart()
		}
		cluster.WaitOK(t)
	})
}

func groupNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("fault-%d", i)
	}
	return names
}

// outage joins a member to every group, stops Redis, checks the layer
// while it is down, restarts Redis and measures how soon every group
// receives again.
func outage(t *testing.T, l faultLayer, stop, restart func(), groups []string) {
	ctx := context.Background()
	inboxes := make([]*layertest.Inbox, len(groups))
	for i, g := range groups {
		inboxes[i] = layertest.NewInbox(1024)
		ch, err := l.NewChannel(inboxes[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := l.GroupAdd(ctx, g, ch); err != nil {
			t.Fatal(err)
		}
	}
	waitCheck(t, l, true)
	before := l.RedisStats()

	stop()
	waitCheck(t, l, false)
	unavailable := 0
	for _, g := range groups {
		sendCtx, cancel := context.WithTimeout(ctx, layertest.Timeout)
		_, err := l.GroupSend(sendCtx, g, layertest.Msg(t, "down", 0))
		cancel()
		switch {
		case errors.Is(err, channellayer.ErrUnavailable):
			unavailable++
		case err != nil:
			t.Fatalf("GroupSend while Redis is down: %v, want ErrUnavailable or success", err)
		}
	}
	if unavailable == 0 {
		t.Fatal("no GroupSend failed while Redis was down")
	}
	// A member joining during the outage is subscribed when Redis returns.
	late := layertest.NewInbox(1024)
	lateCh, err := l.NewChannel(late)
	if err != nil {
		t.Fatal(err)
	}
	joinCtx, cancel := context.WithTimeout(ctx, layertest.Timeout)
	start := time.Now()
	err = l.GroupAdd(joinCtx, "fault-late", lateCh)
	cancel()
	if err != nil && !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("GroupAdd during the outage: %v", err)
	}
	t.Logf("GroupAdd during the outage returned after %v: %v", time.Since(start).Round(time.Millisecond), err)

	restart()
	back := time.Now()
	groups = append(groups, "fault-late")
	inboxes = append(inboxes, late)
	var slowest time.Duration
	for i, g := range groups {
		d := firstDelivery(t, l, g, inboxes[i], back)
		slowest = max(slowest, d)
	}
	t.Logf("every group received again %v after Redis returned", slowest.Round(time.Millisecond))
	if slowest >= resubscribeBound {
		t.Errorf("groups resubscribed %v after Redis returned, want under %v", slowest, resubscribeBound)
	}
	waitCheck(t, l, true)
	after := l.RedisStats()
	t.Logf("stats before %+v after %+v", before, after)
	if after.Reconnects <= before.Reconnects {
		t.Errorf("Reconnects did not grow: %+v -> %+v", before, after)
	}
	if after.PublishErrors <= before.PublishErrors {
		t.Errorf("PublishErrors did not grow: %+v -> %+v", before, after)
	}
	if after.SubscribeErrors <= before.SubscribeErrors {
		t.Errorf("SubscribeErrors did not grow: %+v -> %+v", before, after)
	}
	// Messages flow normally afterwards.
	for i, g := range groups {
		if _, err := l.GroupSend(ctx, g, layertest.Msg(t, "after", i)); err != nil {
			t.Fatal(err)
		}
		for {
			if d := inboxes[i].Next(t); d.Type == "after" {
				break
			}
		}
	}
}

// firstDelivery polls GroupSend until a message reaches in, and returns
// the time from since to that delivery.
func firstDelivery(t *testing.T, l channellayer.Layer, group string, in *layertest.Inbox, since time.Time) time.Duration {
	t.Helper()
	deadline := since.Add(3 * layertest.Timeout)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), layertest.Timeout)
		_, err := l.GroupSend(ctx, group, layertest.Msg(t, "probe", i))
		cancel()
		if err == nil {
			for {
				if d := in.Next(t); d.Type == "probe" {
					return time.Since(since)
				}
			}
		}
		if !errors.Is(err, channellayer.ErrUnavailable) && !errors.Is(err, channellayer.ErrNoReceivers) {
			t.Fatalf("GroupSend %q after Redis returned: %v", group, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %q still not receiving %v after Redis returned: %v", group, time.Since(since), err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// waitCheck polls Check until it reports ready (or not ready).
func waitCheck(t *testing.T, l channellayer.Layer, ready bool) {
	t.Helper()
	deadline := time.Now().Add(3 * layertest.Timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := l.Check(ctx)
		cancel()
		if (err == nil) == ready {
			if err != nil && !errors.Is(err, channellayer.ErrUnavailable) {
				t.Fatalf("Check: %v, want ErrUnavailable", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Check still %v, want ready=%v", err, ready)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// unreachableAtStart checks a layer made while its Redis was down.
func unreachableAtStart(t *testing.T, l faultLayer, start func()) {
	ctx := context.Background()
	waitCheck(t, l, false)
	in := layertest.NewInbox(1024)
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	joinCtx, cancel := context.WithTimeout(ctx, layertest.Timeout)
	err = l.GroupAdd(joinCtx, "early", ch)
	cancel()
	if !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("GroupAdd with Redis down: %v, want ErrUnavailable", err)
	}
	start()
	back := time.Now()
	d := firstDelivery(t, l, "early", in, back)
	t.Logf("the early member received %v after Redis appeared", d.Round(time.Millisecond))
	if d >= resubscribeBound {
		t.Errorf("early member subscribed %v after Redis appeared, want under %v", d, resubscribeBound)
	}
	waitCheck(t, l, true)
	other := layertest.NewInbox(4)
	ch2, err := l.NewChannel(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx, "later", ch2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GroupSend(ctx, "later", layertest.Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	if d := other.Next(t); d.Type != "x" {
		t.Fatalf("got %s", d.Type)
	}
}
