package notifier_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier"
)

// TestListenerBehindAfterRedisLostItsRecord: two Listeners, one behind
// the other, when Redis restarts without persistence and forgets which
// rows were sent. The one behind must not send again the rows the other
// sent before the restart: clients got them already, and with the
// history gone they could not tell the copies (new ids) from new posts.
func TestListenerBehindAfterRedisLostItsRecord(t *testing.T) {
	t.Parallel()
	rs := layertest.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { _ = client.Close() })
	cfg := channellayer.RedisConfig{
		Prefix:  layertest.Prefix(t),
		Logger:  testLogger(t),
		History: []channellayer.HistoryPolicy{{Pattern: notifier.DefaultGroup, Size: 1000}},
	}
	newLayer := func() channellayer.Layer {
		l, err := channellayer.NewRedis(client, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	ahead, behind := newLayer(), newLayer()
	frames := joinRaw(t, ahead, notifier.DefaultGroup)

	pool := newPool(t, true)
	startListener(t, pool, ahead, notifier.Config{SharedLayer: true})
	// The second Listener stops before its first send until released.
	release := make(chan struct{})
	startListener(t, pool, behind, notifier.Config{SharedLayer: true, Pace: func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})

	var posts []notifier.Post
	for range 5 {
		posts = append(posts, insert(t, pool, "ann", "before the restart"))
	}
	for _, p := range posts {
		if got := nextPost(t, frames); got != p.ID {
			t.Fatalf("before the restart: post %d, want %d", got, p.ID)
		}
	}

	rs.Kill()
	rs.Restart() // empty: no history, no record of what was sent
	close(release)
	sentinel := insert(t, pool, "ann", "after the restart")
	if got := nextPost(t, frames); got != sentinel.ID {
		t.Fatalf("after the restart: post %d, want the sentinel %d: the Listener behind sent again what clients had", got, sentinel.ID)
	}
}

// nextPost returns the id of the next post in frames, passing over the
// resync a member gets when the history it should recover from is gone.
func nextPost(t *testing.T, frames chan []byte) int64 {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case data := <-frames:
			var f struct {
				Type string `json:"type"`
				ID   int64  `json:"id"`
			}
			if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("frame %s: %v", data, err)
			}
			if f.Type == channellayer.ResyncType {
				continue
			}
			return f.ID
		case <-deadline:
			t.Fatalf("no post within %v", waitFor)
			return 0
		}
	}
}

// TestHeldListenerResumesWhenAnotherSent: a Listener holds a row its layer
// could not take, and another Listener sends it meanwhile. Once its layer
// is back the first must go on (ready again), though it has nothing left
// to send itself.
func TestHeldListenerResumesWhenAnotherSent(t *testing.T) {
	t.Parallel()
	direct := layertest.RedisClient(t)
	proxy := layertest.StartProxy(t, direct.Options().Addr)
	opts := *direct.Options()
	opts.Addr = proxy.Addr()
	viaProxy := redis.NewClient(&opts)
	t.Cleanup(func() { _ = viaProxy.Close() })
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), Logger: testLogger(t)}
	cut, err := channellayer.NewRedis(viaProxy, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cut.Close() })
	other, err := channellayer.NewRedis(direct, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	frames := joinRaw(t, other, notifier.DefaultGroup)

	pool := newPool(t, true)
	held := startListener(t, pool, cut, notifier.Config{SharedLayer: true})
	// The other Listener sends only once the first is holding, so that the
	// first is the one to find its layer gone.
	startListener(t, pool, other, notifier.Config{SharedLayer: true, Pace: func(ctx context.Context) error {
		for held.Ready() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	}})

	proxy.Refuse()
	p := insert(t, pool, "ann", "while one layer is cut")
	waitReady(t, held, false)
	if got := nextPost(t, frames); got != p.ID {
		t.Fatalf("got post %d, want %d from the other Listener", got, p.ID)
	}
	proxy.Admit()
	waitReady(t, held, true)
}
