package channellayer_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// restartSetup is a member on a layer whose path to its own Redis goes
// through a proxy, and a sender on a direct path: the test can restart
// Redis and send before the member's layer is subscribed again.
type restartSetup struct {
	srv      *layertest.RedisServer
	proxy    *layertest.Proxy
	member   *channellayer.Redis
	sender   *channellayer.Redis
	in       *layertest.Inbox
	direct   *redis.Client
	group    string
	original []byte
}

func newRestartSetup(t *testing.T, group string) *restartSetup {
	srv := layertest.StartRedis(t)
	proxy := layertest.StartProxy(t, srv.Addr)
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = viaProxy.Close(); _ = direct.Close() })
	cfg := channellayer.RedisConfig{Prefix: layertest.Prefix(t), History: layertest.History}
	member, err := channellayer.NewRedis(viaProxy, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = member.Close() })
	sender, err := channellayer.NewRedis(direct, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sender.Close() })
	in := layertest.NewInbox(64)
	ch, err := member.NewChannel(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := member.GroupAdd(context.Background(), group, ch); err != nil {
		t.Fatal(err)
	}
	return &restartSetup{srv: srv, proxy: proxy, member: member, sender: sender, in: in, direct: direct, group: group}
}

// restart restarts Redis empty while the member's layer cannot reach it,
// runs whileAway once Redis answers again, and then lets the member's
// layer reconnect.
func (s *restartSetup) restart(t *testing.T, whileAway func()) {
	lost := s.member.RedisStats().SubscribeErrors
	s.proxy.Refuse()
	s.srv.Kill()
	waitUntil(t, "the member's layer to lose its subscription", func() bool { return s.member.RedisStats().SubscribeErrors > lost })
	s.srv.Restart()
	whileAway()
	s.proxy.Admit()
}

// send sends a message that is kept in the group's history, whether or
// not it reached anyone.
func (s *restartSetup) send(t *testing.T, typ string, n int) {
	t.Helper()
	_, err := s.sender.GroupSend(context.Background(), s.group, layertest.Msg(t, typ, n))
	if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatal(err)
	}
}

// TestRedisRecoversGroupThatDeliveredNothing restarts Redis under a
// member of a history group that has delivered nothing yet, and sends
// once Redis is back, before the member's layer is subscribed again: the
// member still gets the message, from the history.
func TestRedisRecoversGroupThatDeliveredNothing(t *testing.T) {
	s := newRestartSetup(t, "hist.quiet")
	s.restart(t, func() { s.send(t, "after", 1) })
	d := s.in.Next(t)
	if d.Type != "after" {
		t.Fatalf("got %s %s, want the message sent while the member's layer was away", d.Type, d.Data)
	}
	if d.Group != "hist.quiet" || d.ID == "" {
		t.Fatalf("recovered message has group %q id %q", d.Group, d.ID)
	}
	// The live stream follows, without a copy of it.
	s.send(t, "live", 2)
	if d := s.in.Next(t); d.Type != "live" {
		t.Fatalf("got %s %s, want live", d.Type, d.Data)
	}
}

// TestRedisRestartedEmptyResyncsThenReplays restarts Redis without its
// data under a member that had received messages: the history cannot say
// what it missed, so the member is told to resync, naming the group, and
// then gets what was sent once Redis was back, in order.
func TestRedisRestartedEmptyResyncsThenReplays(t *testing.T) {
	s := newRestartSetup(t, "hist.lost")
	s.send(t, "before", 0)
	if d := s.in.Next(t); d.Type != "before" {
		t.Fatalf("got %s, want before", d.Data)
	}
	s.restart(t, func() {
		for i := range 3 {
			s.send(t, "after", i)
		}
	})
	d := s.in.Next(t)
	if d.Type != channellayer.ResyncType || string(d.Data) != `{"type":"herald.resync","group":"hist.lost"}` {
		t.Fatalf("got %s %s, want a resync naming hist.lost", d.Type, d.Data)
	}
	for i := range 3 {
		d := s.in.Next(t)
		if d.Type != "after" || d.ID == "" {
			t.Fatalf("message %d after the resync: %s %s (id %q), want after", i, d.Type, d.Data, d.ID)
		}
	}
	s.send(t, "live", 9)
	if d := s.in.Next(t); d.Type != "live" {
		t.Fatalf("got %s %s, want live", d.Type, d.Data)
	}
}
