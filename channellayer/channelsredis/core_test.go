package channelsredis_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/channelsredis"
	"github.com/heraldhq/herald/channellayer/layertest"
)

func newCore(t *testing.T, rdb *redis.Client, cfg channelsredis.CoreConfig) *channelsredis.Core {
	t.Helper()
	l, err := channelsredis.NewCore(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), layertest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls Redis until cond holds: the state it waits for is only
// observable there.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(layertest.Timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestCoreMembership checks that Herald's members are real members to
// Django: in the group's sorted set, refreshed while they live, removed
// when they go.
func TestCoreMembership(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := layertest.Prefix(t)
	l := newCore(t, rdb, channelsredis.CoreConfig{Prefix: p, GroupExpiry: 2 * time.Second})
	ch, err := l.NewChannel(layertest.NewInbox(4))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(tctx(t), "gossip", ch); err != nil {
		t.Fatal(err)
	}
	key := p + ":group:gossip"
	first, err := rdb.ZScore(tctx(t), key, ch).Result()
	if err != nil {
		t.Fatalf("member not in %s: %v", key, err)
	}
	if ttl := rdb.TTL(tctx(t), key).Val(); ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("group key TTL %v, want the group expiry", ttl)
	}
	// Refreshed well within the group expiry.
	waitFor(t, "the membership to be refreshed", func() bool {
		s, err := rdb.ZScore(tctx(t), key, ch).Result()
		return err == nil && s > first
	})
	// After the group expiry has passed since joining, a group send (which
	// drops members older than the expiry, as Django's does) still finds it.
	waitFor(t, "the group expiry to pass", func() bool { return float64(time.Now().Unix())-3 > first })
	if _, err := l.GroupSend(tctx(t), "gossip", layertest.Msg(t, "x", 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.CloseChannel(tctx(t), ch); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZScore(tctx(t), key, ch).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("closed channel still a member: %v", err)
	}
}

func TestCoreCloseLeavesGroups(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := layertest.Prefix(t)
	l, err := channelsredis.NewCore(rdb, channelsredis.CoreConfig{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := l.NewChannel(layertest.NewInbox(1))
	if err := l.GroupAdd(tctx(t), "g", ch); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(tctx(t), p+":group:g").Val(); n != 0 {
		t.Fatalf("%d members left after Close", n)
	}
}

// gone is the channel of a channels_redis process that nobody reads.
const goneProcess = "specific.0123456789abcdef0123456789abcdef!"

func TestCoreCapacityAndExpiry(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := layertest.Prefix(t)
	l := newCore(t, rdb, channelsredis.CoreConfig{
		Prefix:          p,
		Capacity:        2,
		Expiry:          5 * time.Second,
		ChannelCapacity: []channelsredis.Capacity{{Pattern: "big.*", Capacity: 3}},
	})
	ch := goneProcess + "a"
	for i := range 2 {
		if err := l.Send(tctx(t), ch, layertest.Msg(t, "x", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Send(tctx(t), ch, layertest.Msg(t, "x", 3)); !errors.Is(err, channelsredis.ErrFull) {
		t.Fatalf("send to a full inbox: %v, want ErrFull", err)
	}
	inbox := p + goneProcess
	if ttl := rdb.TTL(tctx(t), inbox).Val(); ttl <= 0 || ttl > 5*time.Second {
		t.Fatalf("inbox TTL %v, want the expiry", ttl)
	}
	// Messages older than the expiry are swept before the capacity check.
	members := rdb.ZRange(tctx(t), inbox, 0, -1).Val()
	old := float64(time.Now().Unix() - 60)
	for _, m := range members {
		rdb.ZAdd(tctx(t), inbox, redis.Z{Score: old, Member: m})
	}
	if err := l.Send(tctx(t), ch, layertest.Msg(t, "x", 4)); err != nil {
		t.Fatalf("send after the old messages expired: %v", err)
	}
	if n := rdb.ZCard(tctx(t), inbox).Val(); n != 1 {
		t.Fatalf("inbox holds %d messages, want 1", n)
	}
	// channel_capacity patterns override the default.
	for i := range 3 {
		if err := l.Send(tctx(t), "big.queue", layertest.Msg(t, "x", i)); err != nil {
			t.Fatalf("send %d to big.queue: %v", i, err)
		}
	}
	if err := l.Send(tctx(t), "big.queue", layertest.Msg(t, "x", 4)); !errors.Is(err, channelsredis.ErrFull) {
		t.Fatalf("fourth send to big.queue: %v, want ErrFull", err)
	}
}

// TestCoreStaleMembers: a member whose process is gone keeps its inbox
// filling until its messages expire, and live members still get theirs;
// a member older than the group expiry is dropped by the next send.
func TestCoreStaleMembers(t *testing.T) {
	t.Parallel()
	rdb := redisClient(t)
	p := layertest.Prefix(t)
	l := newCore(t, rdb, channelsredis.CoreConfig{Prefix: p, Capacity: 1})
	in := layertest.NewInbox(4)
	ch, _ := l.NewChannel(in)
	if err := l.GroupAdd(tctx(t), "gossip", ch); err != nil {
		t.Fatal(err)
	}
	key := p + ":group:gossip"
	now := float64(time.Now().Unix())
	rdb.ZAdd(tctx(t), key, redis.Z{Score: now, Member: goneProcess + "gone"},
		redis.Z{Score: now - 2*86400, Member: goneProcess + "ancient"})
	for i := range 3 {
		if _, err := l.GroupSend(tctx(t), "gossip", layertest.Msg(t, "x", i)); err != nil {
			t.Fatal(err)
		}
		d := in.Next(t)
		if want := `{"n":` + strconv.Itoa(i) + `,"type":"x"}`; string(d.Data) != want {
			t.Fatalf("got %s", d.Data)
		}
	}
	if err := rdb.ZScore(tctx(t), key, goneProcess+"ancient").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("member older than the group expiry was kept: %v", err)
	}
	if n := rdb.ZCard(tctx(t), p+goneProcess).Val(); n != 1 {
		t.Fatalf("gone process's inbox holds %d messages, want its capacity 1", n)
	}
	// Sends to channel names no process could have made find nobody.
	err := l.Send(tctx(t), "specific.notaprocess!x", layertest.Msg(t, "x", 1))
	if !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("send to a made-up process: %v", err)
	}
}
