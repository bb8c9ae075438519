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
	startListener(t, pool, ahead, notifier.Config{})
	// The second Listener stops before its first send until released.
	release := make(chan struct{})
	startListener(t, pool, behind, notifier.Config{Pace: func(ctx context.Context) error {
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
