package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// sharedLayers are the layers whose instances share state and send once:
// each makes the layers of one deployment.
var sharedLayers = []struct {
	name   string
	layers func(t *testing.T) func() channellayer.Layer
}{{"redis", redisLayers}, {"cluster", clusterLayers}}

// TestListenersSendOnce runs the Listeners of two instances sharing a
// layer, and a third instance with no Listener, like one whose Listener
// is down or whose clients moved there from an instance that died.
// During a burst of inserts, members of all three get every post once,
// in commit order, with a history id: each post is sent once through the
// layer, by whichever Listener offers it first.
func TestListenersSendOnce(t *testing.T) {
	t.Parallel()
	for _, sl := range sharedLayers {
		t.Run(sl.name, func(t *testing.T) {
			t.Parallel()
			testListenersSendOnce(t, sl.layers(t))
		})
	}
}

func testListenersSendOnce(t *testing.T, newLayer func() channellayer.Layer) {
	pool := newPool(t, true)
	layers := []channellayer.Layer{newLayer(), newLayer(), newLayer()}
	var inboxes []inbox
	var raw []chan []byte
	for _, l := range layers {
		inboxes = append(inboxes, join(t, l))
		raw = append(raw, joinRaw(t, l, notifier.DefaultGroup))
	}
	for _, l := range layers[:2] {
		startListener(t, pool, l, notifier.Config{})
	}

	const n = 300
	var wg sync.WaitGroup
	for w := range 3 { // concurrent writers, so that commits interleave
		wg.Go(func() {
			for i := w; i < n; i += 3 {
				if _, err := pool.Exec(t.Context(), "INSERT INTO posts (author, message) VALUES ('burst', $1)", fmt.Sprint(i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Commit order, which is the log's order.
	rows, _ := pool.Query(t.Context(), `SELECT (data->>'id')::bigint, data->>'author', data->>'message'
		FROM herald_log ORDER BY seq`)
	want, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (p notifier.Post, err error) {
		err = r.Scan(&p.ID, &p.Author, &p.Message)
		return p, err
	})
	if err != nil || len(want) != n {
		t.Fatalf("%d posts in the log (err %v), want %d", len(want), err, n)
	}
	// Then a sentinel: anything twice or out of place comes before it.
	want = append(want, insert(t, pool, "sentinel", "sentinel"))
	for i, in := range inboxes {
		for k, p := range want {
			if got := in.next(t); got.ID != p.ID || got.Message != p.Message || got.Sender != p.Author {
				t.Fatalf("instance %d, post %d: got %s, want post %d", i, k, brief(got), p.ID)
			}
		}
	}
	for i, ch := range raw {
		var last channellayer.ID
		for k := range n + 1 { // the posts and expectAll's sentinel
			var f struct {
				HeraldID string `json:"herald_id"`
			}
			_ = json.Unmarshal(<-ch, &f)
			id, err := channellayer.ParseID(f.HeraldID)
			if err != nil || id.Compare(last) <= 0 {
				t.Fatalf("instance %d, post %d: id %q (err %v) does not follow %v", i, k, f.HeraldID, err, last)
			}
			last = id
		}
	}
}

// redisLayers returns a function that makes Redis layers of one
// deployment: instances sharing Redis and a key prefix.
func redisLayers(t *testing.T) func() channellayer.Layer {
	client := layertest.RedisClient(t)
	return deployment(t, func(cfg channellayer.RedisConfig) (channellayer.Layer, error) {
		return channellayer.NewRedis(client, cfg)
	})
}

// clusterLayers is redisLayers on a Redis Cluster of its own.
func clusterLayers(t *testing.T) func() channellayer.Layer {
	cluster := layertest.StartCluster(t, 3)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs()})
	t.Cleanup(func() { _ = client.Close() })
	return deployment(t, func(cfg channellayer.RedisConfig) (channellayer.Layer, error) {
		return channellayer.NewRedisCluster(client, cfg)
	})
}

// deployment returns a function that makes layers with newLayer, all
// with the same key prefix, each closed when t ends.
func deployment(t *testing.T, newLayer func(channellayer.RedisConfig) (channellayer.Layer, error)) func() channellayer.Layer {
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), Logger: testLogger(t)}
	return func() channellayer.Layer {
		l, err := newLayer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
}

// TestFreshListenerSendsWhatNoneSent stops the only Listener, commits
// posts while none runs, and starts a fresh one on another instance: it
// sends the posts committed meanwhile, once, where the layer says the
// last one sent was, rather than starting at the end of the log. A client
// resuming from the group's history then finds them there.
func TestFreshListenerSendsWhatNoneSent(t *testing.T) {
	t.Parallel()
	for _, sl := range sharedLayers {
		t.Run(sl.name, func(t *testing.T) {
			t.Parallel()
			testFreshListenerSendsWhatNoneSent(t, sl.layers(t))
		})
	}
}

func testFreshListenerSendsWhatNoneSent(t *testing.T, newLayer func() channellayer.Layer) {
	pool := newPool(t, true)
	in := join(t, newLayer()) // an instance with no Listener

	l, err := notifier.New(pool, newLayer(), notifier.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	waitReady(t, l, true)
	in.expect(t, insert(t, pool, "before", "sent live"))
	cancel()
	<-done

	var missed []notifier.Post
	for i := range 3 {
		missed = append(missed, insert(t, pool, "meanwhile", fmt.Sprint(i)))
	}
	startListener(t, pool, newLayer(), notifier.Config{})
	in.expectAll(t, pool, missed)
}

// countingOnce counts the rows a Listener offers its layer, and the
// probes of the layer.
type countingOnce struct {
	*channellayer.Redis
	offers atomic.Int32
	checks atomic.Int32
}

func (c *countingOnce) Check(ctx context.Context) error {
	c.checks.Add(1)
	return c.Redis.Check(ctx)
}

func (c *countingOnce) GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	c.offers.Add(1)
	return c.Redis.GroupSendOnce(ctx, source, seq, group, msg)
}

// TestListenerHoldsRowsWhileTheLayerIsDown cuts the path to Redis: the
// posts committed meanwhile reach no client, not even this instance's
// own without a history id, and the Listener says it is not ready. Once
// Redis is reachable again they arrive in order, once, each with an id,
// and a client resuming from the last id it had before the cut finds
// them in the group's history.
func TestListenerHoldsRowsWhileTheLayerIsDown(t *testing.T) {
	t.Parallel()
	client := layertest.RedisClient(t) // skips when Redis is down
	proxy := layertest.StartProxy(t, client.Options().Addr)
	cut := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1,
		Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { cut.Close() })
	rl, err := channellayer.NewRedis(cut, channellayer.RedisConfig{Prefix: layertest.Prefix(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rl.Close() })
	layer := &countingOnce{Redis: rl}
	pool := newPool(t, true)
	raw := joinRaw(t, layer, notifier.DefaultGroup)
	l := startListener(t, pool, layer, notifier.Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})

	insert(t, pool, "before", "live")
	before := nextFrame(t, raw)
	if before.HeraldID == "" {
		t.Fatalf("post before the cut came without a history id: %+v", before)
	}

	proxy.Freeze()
	var held []notifier.Post
	for i := range 3 {
		held = append(held, insert(t, pool, "held", fmt.Sprint(i)))
	}
	waitReady(t, l, false)
	// The Listener probes the layer twice before offering the held row
	// again: it waits, rather than skipping the row.
	checks := layer.checks.Load()
	deadline := time.Now().Add(waitFor)
	for layer.checks.Load() < checks+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the layer was not probed again within %v", waitFor)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter, bounded by deadline
	}
	select {
	case data := <-raw:
		t.Fatalf("delivered while the layer was unreachable: %s", data)
	default:
	}

	proxy.Thaw()
	waitReady(t, l, true)
	want := append(held, insert(t, pool, "sentinel", "after")) // anything twice comes before it
	last, err := channellayer.ParseID(before.HeraldID)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range want {
		f := nextFrame(t, raw)
		id, err := channellayer.ParseID(f.HeraldID)
		if f.ID != p.ID || f.Message != p.Message || err != nil || id.Compare(last) <= 0 {
			t.Fatalf("post %d: got %+v (id error %v), want post %d with an id after %v", i, f, err, p.ID, last)
		}
		last = id
	}
	resumed, err := rl.History(t.Context(), notifier.DefaultGroup, before.HeraldID, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(resumed) != len(want) {
		t.Fatalf("resuming from %s gave %d messages, want %d", before.HeraldID, len(resumed), len(want))
	}
	for i, m := range resumed {
		var f frame
		if err := json.Unmarshal(m.Bytes(), &f); err != nil || f.ID != want[i].ID {
			t.Fatalf("resumed message %d: %s (%v), want post %d", i, m.Bytes(), err, want[i].ID)
		}
	}
}

// frame is a post announcement as a member of a history group gets it.
type frame struct {
	ID       int64  `json:"id"`
	Message  string `json:"message"`
	HeraldID string `json:"herald_id"`
}

// nextFrame decodes the next message of ch, or fails after waitFor.
func nextFrame(t *testing.T, ch chan []byte) frame {
	t.Helper()
	select {
	case data := <-ch:
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("undecodable message %s: %v", data, err)
		}
		return f
	case <-time.After(waitFor):
		t.Fatalf("no message within %v", waitFor)
		return frame{}
	}
}
