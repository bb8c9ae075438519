package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier"
)

// create makes a post or fails the test.
func create(t *testing.T, store notifier.Store, np notifier.NewPost) notifier.Created {
	t.Helper()
	c, err := store.Create(t.Context(), np)
	if err != nil {
		t.Fatalf("Create(%+v): %v", np, err)
	}
	return c
}

func TestMemoryStoreDeliversOnCreate(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	// Nobody listening yet is not an error.
	first := create(t, store, notifier.NewPost{Author: "ann", Message: "to nobody"})
	if first.ID <= 0 || first.Delivery != notifier.DeliverySent {
		t.Fatalf("Create = %+v", first)
	}

	in := join(t, layer)
	c := create(t, store, notifier.NewPost{Author: " ann ", Message: "hello"})
	if c.ID != first.ID+1 || c.Author != "ann" || c.CreatedAt.IsZero() || c.Delivery != notifier.DeliverySent {
		t.Fatalf("Create returned %+v", c)
	}
	in.expect(t, c.Post)

	if _, err := store.Create(t.Context(), notifier.NewPost{Author: "ann"}); !errors.Is(err, notifier.ErrInvalidPost) {
		t.Errorf("Create with empty message: %v, want ErrInvalidPost", err)
	}
}

// TestMemoryStoreIDsDoNotRepeat: a store made after another (a restarted
// server) hands out ids above every id of the first, so that a page
// that drops posts whose id it shows does not drop new ones.
func TestMemoryStoreIDsDoNotRepeat(t *testing.T) {
	layer := channellayer.NewMemory()
	before, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for range 3 {
		last = create(t, before, notifier.NewPost{Author: "ann", Message: "before the restart"}).ID
	}
	// A restart takes longer than the clock's millisecond; wait for it.
	for start := time.Now().UnixMilli(); time.Now().UnixMilli() == start; {
		time.Sleep(100 * time.Microsecond)
	}
	after, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	p := create(t, after, notifier.NewPost{Author: "ann", Message: "after the restart"})
	if p.ID <= last {
		t.Fatalf("after a restart the first id is %d, not above the last one before (%d)", p.ID, last)
	}
	if p.ID >= 1<<53 {
		t.Fatalf("id %d is not exact in JavaScript", p.ID)
	}
}

func TestMemoryStoreRecent(t *testing.T) {
	store, err := notifier.NewMemoryStore(channellayer.NewMemory(), "gossip")
	if err != nil {
		t.Fatal(err)
	}
	const n = notifier.MaxRecent + 5
	var ids []int64
	for i := range n {
		ids = append(ids, create(t, store, notifier.NewPost{Author: "ann", Message: fmt.Sprint(i)}).ID)
	}
	recent, err := store.Recent(t.Context(), 2*n)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != notifier.MaxRecent || recent[0].ID != ids[n-1] || recent[len(recent)-1].ID != ids[n-notifier.MaxRecent] {
		t.Fatalf("Recent kept %d posts, ids %d..%d; want %d, newest first",
			len(recent), recent[0].ID, recent[len(recent)-1].ID, notifier.MaxRecent)
	}
	if recent, _ := store.Recent(t.Context(), 3); len(recent) != 3 || recent[2].ID != ids[n-3] {
		t.Errorf("Recent(3) = %+v", recent)
	}
	if recent, _ := store.Recent(t.Context(), -1); len(recent) != 0 {
		t.Errorf("Recent(-1) = %+v, want none", recent)
	}
}

// TestMemoryStoreLayerError: a post the layer refuses is stored and
// reported pending, not failed.
func TestMemoryStoreLayerError(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "gossip")
	if err != nil {
		t.Fatal(err)
	}
	layer.Close()
	c, err := store.Create(t.Context(), notifier.NewPost{Author: "ann", Message: "later"})
	if err != nil || c.Delivery != notifier.DeliveryPending || store.Pending() != 1 {
		t.Fatalf("Create on a closed layer = %+v, %v (%d pending); want the post, pending", c, err, store.Pending())
	}
	if recent, _ := store.Recent(t.Context(), 1); len(recent) != 1 || recent[0] != c.Post {
		t.Errorf("Recent = %+v, want the pending post", recent)
	}
	if _, err := notifier.NewMemoryStore(layer, "bad name"); err == nil {
		t.Error("NewMemoryStore accepted an invalid group name")
	}
}

// TestMemoryStoreIdempotency: a Create retried with the same key stores
// and delivers one post and answers as the first did; the same key for
// another post is refused.
func TestMemoryStoreIdempotency(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	in := join(t, layer)
	np := notifier.NewPost{Author: "ann", Message: "once", IdempotencyKey: "k1"}
	first := create(t, store, np)
	np.Author = " ann " // the same post, as stored
	again := create(t, store, np)
	if !again.Replayed || first.Replayed || again.Post != first.Post || again.Delivery != first.Delivery {
		t.Fatalf("retry = %+v, want a replay of %+v", again, first)
	}
	np.Message = "another"
	if _, err := store.Create(t.Context(), np); !errors.Is(err, notifier.ErrIdempotencyKeyReused) {
		t.Fatalf("same key, other post: %v, want ErrIdempotencyKeyReused", err)
	}
	np.IdempotencyKey = "k2"
	second := create(t, store, np)
	if second.Replayed || second.ID == first.ID {
		t.Fatalf("another key = %+v, want a new post", second)
	}
	in.expect(t, first.Post)
	in.expect(t, second.Post)
	// Nothing else: the next post is the next message.
	in.expect(t, create(t, store, notifier.NewPost{Author: "ann", Message: "sentinel"}).Post)
	if recent, _ := store.Recent(t.Context(), 10); len(recent) != 3 {
		t.Errorf("%d posts stored, want 3", len(recent))
	}
}

// TestMemoryStoreHoldsPostsWhileTheLayerIsDown cuts the store's path to
// Redis: posts are stored and answered pending, and once Redis is
// reachable again Run delivers them, in order, once, before the posts
// created after.
func TestMemoryStoreHoldsPostsWhileTheLayerIsDown(t *testing.T) {
	client := layertest.RedisClient(t) // skips when Redis is down
	proxy := layertest.StartProxy(t, client.Options().Addr)
	cut := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 300 * time.Millisecond,
		ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, MaxRetries: -1,
		Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { cut.Close() })
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), Logger: testLogger(t)}
	storeLayer, err := channellayer.NewRedis(cut, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storeLayer.Close() })
	// The member is on another instance, whose path to Redis stays up.
	memberLayer, err := channellayer.NewRedis(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { memberLayer.Close() })
	in := join(t, memberLayer)

	store, err := notifier.NewMemoryStore(storeLayer, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})

	live := create(t, store, notifier.NewPost{Author: "ann", Message: "live"})
	in.expect(t, live.Post)

	proxy.Freeze()
	var held []notifier.Post
	for i := range 3 {
		c := create(t, store, notifier.NewPost{Author: "ann", Message: fmt.Sprint("held ", i)})
		if c.Delivery != notifier.DeliveryPending {
			t.Fatalf("post %d created while Redis is cut: %+v, want pending", i, c)
		}
		held = append(held, c.Post)
	}
	select {
	case g := <-in:
		t.Fatalf("delivered while the layer was cut: %s", brief(g))
	default:
	}

	proxy.Thaw()
	for _, p := range held {
		in.expect(t, p)
	}
	in.expect(t, create(t, store, notifier.NewPost{Author: "ann", Message: "sentinel"}).Post)
	if n := store.Pending(); n != 0 {
		t.Errorf("%d posts still pending", n)
	}
}

// TestMemoryStoreBacklogFull: once MaxPending posts wait for the layer,
// Create refuses more, and stores nothing, rather than grow without
// bound.
func TestMemoryStoreBacklogFull(t *testing.T) {
	layer := channellayer.NewMemory()
	store, err := notifier.NewMemoryStore(layer, "")
	if err != nil {
		t.Fatal(err)
	}
	layer.Close()
	for range notifier.MaxPending {
		create(t, store, notifier.NewPost{Author: "ann", Message: "waits"})
	}
	if _, err := store.Create(t.Context(), notifier.NewPost{Author: "ann", Message: "one too many"}); !errors.Is(err, notifier.ErrBacklogFull) {
		t.Fatalf("Create past MaxPending: %v, want ErrBacklogFull", err)
	}
	if recent, _ := store.Recent(t.Context(), 1); len(recent) != 1 || recent[0].Message != "waits" {
		t.Fatalf("the refused post was stored: %+v", recent)
	}
}
