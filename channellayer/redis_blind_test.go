package channellayer_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// TestRedisRefusesSendWhileResubscribing: a group without history, with
// members on two instances. A's subscription connection is lost and cannot
// be made again, while its command connection still works and B still
// receives. A group send through A then reaches B's member only: it must
// be refused (ErrUnavailable, for the publisher to retry), not answered as
// delivered. Once A is subscribed again its member is told it may have
// missed messages (a resync naming the group), and the same send reaches
// both.
func TestRedisRefusesSendWhileResubscribing(t *testing.T) {
	direct := layertest.RedisClient(t)
	prefix := layertest.Prefix(t)
	name := prefix + "-a"

	var refuse atomic.Bool
	var d net.Dialer
	opts := *direct.Options()
	opts.ClientName = name
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if refuse.Load() {
			return nil, errors.New("dial refused by the test")
		}
		return d.DialContext(ctx, network, addr)
	}
	clientA := redis.NewClient(&opts)
	t.Cleanup(func() { _ = clientA.Close() })
	a, err := channellayer.NewRedis(clientA, channellayer.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := channellayer.NewRedis(direct, channellayer.RedisConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	ctx := t.Context()
	const group = "live"
	inA, inB := memberOf(t, a, group), memberOf(t, b, group)
	// A's command connection is made and idle, so sends need no dial.
	if err := clientA.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	refuse.Store(true)
	errorsBefore := a.RedisStats().SubscribeErrors
	killPubSub(t, direct, name)
	deadline := time.Now().Add(5 * time.Second)
	for a.RedisStats().SubscribeErrors == errorsBefore {
		if time.Now().After(deadline) {
			t.Fatal("A never noticed that its subscription connection was killed")
		}
		time.Sleep(5 * time.Millisecond)
	}

	msg := layertest.Msg(t, "note", 1)
	_, err = a.GroupSend(ctx, group, msg)
	if !errors.Is(err, channellayer.ErrUnavailable) {
		t.Fatalf("send through A while its subscription is down: %v, want ErrUnavailable (B's member got it, A's cannot)", err)
	}
	inB.Empty(t)

	refuse.Store(false)
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err = a.GroupSend(ctx, group, msg)
		if err == nil {
			break
		}
		if !errors.Is(err, channellayer.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("retry once A can subscribe again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A's member was not carried for a while: it is told so before the
	// next message. B's never stopped receiving.
	if got := inA.Next(t); got.Type != channellayer.ResyncType || !strings.Contains(string(got.Data), `"group":"`+group+`"`) {
		t.Fatalf("A's member got %+v first, want a resync naming %q", got, group)
	}
	for _, in := range []*layertest.Inbox{inA, inB} {
		if got := in.Next(t); got.Type != "note" {
			t.Fatalf("got %+v, want the note", got)
		}
		in.Empty(t)
	}
}

// killPubSub closes the subscription connection of the client named name.
func killPubSub(t *testing.T, direct *redis.Client, name string) {
	t.Helper()
	list, err := direct.Do(t.Context(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(" "+line+" ", " name="+name+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if err := direct.Do(t.Context(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no subscription connection named %s in CLIENT LIST:\n%s", name, list)
}

// TestRedisFrozenWhileSending: Redis freezes with a send to a group without
// history in its input, and stays frozen long enough that A gives its
// subscription up. When Redis continues, the send is applied, but A's old
// subscription is gone: A's member must get the message or be told it
// missed something (a resync naming the group), never neither.
func TestRedisFrozenWhileSending(t *testing.T) {
	srv := layertest.StartRedis(t)
	newLayer := func() (channellayer.Layer, *channellayer.Redis) {
		client := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
		t.Cleanup(func() { _ = client.Close() })
		l, err := channellayer.NewRedis(client, channellayer.RedisConfig{Prefix: layertest.Prefix(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l, l
	}
	a, ra := newLayer()
	b, _ := newLayer()
	ctx := t.Context()
	const group = "live"
	inA := memberOf(t, a, group)
	memberOf(t, b, group) // so that the send has a receiver besides A

	srv.Pause()
	sent := make(chan error, 1)
	go func() {
		_, err := b.GroupSend(ctx, group, layertest.Msg(t, "note", 1))
		sent <- err
	}()
	errorsBefore := ra.RedisStats().SubscribeErrors
	deadline := time.Now().Add(10 * time.Second)
	for ra.RedisStats().SubscribeErrors == errorsBefore {
		if time.Now().After(deadline) {
			srv.Continue()
			t.Fatal("A never gave up its subscription to a frozen Redis")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Continue()
	if err := <-sent; err != nil {
		t.Logf("the send during the freeze: %v", err)
	}
	// A's member: the note, or a resync naming the group, first.
	got := inA.Next(t)
	switch {
	case got.Type == "note":
	case got.Type == channellayer.ResyncType && strings.Contains(string(got.Data), `"group":"`+group+`"`):
	default:
		t.Fatalf("A's member got %+v, want the note or a resync naming %q", got, group)
	}
}

// memberOf joins a new member of group on l and returns its inbox.
func memberOf(t *testing.T, l channellayer.Layer, group string) *layertest.Inbox {
	t.Helper()
	in := layertest.NewInbox(8)
	ch, err := l.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(t.Context(), group, ch); err != nil {
		t.Fatal(err)
	}
	return in
}
