package channellayer_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// TestRedisSilentlyDeadConnection cuts the path to Redis without a reset
// or a close: the subscription connection just goes quiet. The layer must
// notice by its own pings, reconnect when the path returns, and deliver
// again, rather than wait minutes for TCP to give up.
func TestRedisSilentlyDeadConnection(t *testing.T) {
	srv := layertest.StartRedis(t)
	proxy := layertest.StartProxy(t, srv.Addr)
	prefix := layertest.Prefix(t)
	const health = 200 * time.Millisecond

	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = viaProxy.Close() })
	l, err := channellayer.NewRedis(viaProxy, channellayer.RedisConfig{Prefix: prefix, HealthInterval: health})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The sender reaches Redis directly, as another instance would.
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = direct.Close() })
	sender, err := channellayer.NewRedis(direct, channellayer.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()

	in := layertest.NewInbox(64)
	ctx, cancel := context.WithTimeout(context.Background(), layertest.Timeout)
	defer cancel()
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx, "quiet", ch); err != nil {
		t.Fatal(err)
	}
	if _, err := sender.GroupSend(ctx, "quiet", layertest.Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	if d := in.Next(t); d.Type != "x" {
		t.Fatalf("got %s", d.Data)
	}

	before := l.RedisStats().SubscribeErrors
	proxy.Freeze()
	frozeAt := time.Now()
	// Silent for one interval, pinged, silent for another: given up.
	deadline := frozeAt.Add(layertest.Timeout)
	for l.RedisStats().SubscribeErrors == before {
		if time.Now().After(deadline) {
			t.Fatal("the layer did not notice that its connection went silent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("silence noticed after %v", time.Since(frozeAt).Round(time.Millisecond))

	proxy.Thaw()
	deadline = time.Now().Add(layertest.Timeout)
	for n := 2; ; n++ {
		_, _ = sender.GroupSend(ctx, "quiet", layertest.Msg(t, "x", n))
		if _, ok := in.Poll(50 * time.Millisecond); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery after the path came back")
		}
	}
}
