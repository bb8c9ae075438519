package channellayer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/groups"
)

// RedisConfig configures a Redis layer, on one Redis or on a cluster.
// The zero value works.
type RedisConfig struct {
	// Prefix starts every Redis channel name the layer uses, so that
	// several deployments can share one Redis. Default "herald".
	Prefix string
	// Logger receives connection errors and recoveries. Default
	// slog.Default().
	Logger *slog.Logger
	// MaxBackoff caps the wait between attempts to reach Redis again after
	// a subscription connection failed. Default 1s, which keeps the time
	// from Redis returning to every group flowing again under 2s.
	MaxBackoff time.Duration
	// HealthInterval is how long a subscription connection may stay
	// silent before the layer pings it. Default 1s.
	HealthInterval time.Duration
	// HealthTimeout is how long the layer waits for an answer to that
	// ping. None in time means the path to Redis died without a word (no
	// reset, no close) or the server stopped answering (a paused or
	// frozen node): the layer reconnects and, on a cluster, reads the
	// slot map again and follows the groups to whoever owns their slots
	// now. A silent node is so noticed within HealthInterval +
	// HealthTimeout. Default 2s.
	HealthTimeout time.Duration
	// History lists which groups keep a history (a Redis Stream per group,
	// trimmed by size and age) and how much. Nil means DefaultHistory; an
	// empty, non-nil list keeps none.
	History []HistoryPolicy
	// MaxGroups caps the distinct groups this instance holds at once
	// (those with a local member, each a subscription on Redis): a
	// GroupAdd that would create one more fails with an error wrapping
	// groups.ErrGroupLimit. Sends are not limited. 0: no cap.
	MaxGroups int
}

// Redis is a Layer on Redis pub/sub, shared by every instance that uses
// the same Redis and Prefix.
//
// Each instance holds one subscription connection. It subscribes to a
// group's Redis channel only while it has a local member of that group,
// and to one channel of its own for sends addressed to its connections.
// A group send is one PUBLISH however many members and instances there
// are; fan-out to local members happens in the instance, from the one
// goroutine that reads the subscription, which never waits on a member.
//
// The subscription is restored, with every group that has local members,
// as soon as Redis answers again (within MaxBackoff). Members of a group
// with history then get what was published meanwhile, from the history,
// from the last id delivered or, if none, from when the group was
// subscribed (see the package doc); for other groups delivery is at most
// once, and messages published while an instance's subscription
// connection was down do not reach it.
type Redis struct {
	*redisCore
	client    *redis.Client
	sub       *subscriber
	keyPrefix string // of the keys the layer keeps: "<Prefix>:"
}

var _ Layer = (*Redis)(nil)

// NewRedis returns a layer on client, which it does not close. The
// layer starts two goroutines that serve its subscription connection;
// Close stops them. NewRedis does not need Redis to be reachable: the
// layer connects, and reconnects, on its own.
func NewRedis(client *redis.Client, cfg RedisConfig) (*Redis, error) {
	core, err := newRedisCore(cfg)
	if err != nil {
		return nil, err
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "herald"
	}
	l := &Redis{redisCore: core, client: client, keyPrefix: prefix + ":"}
	if len(core.policies) > 0 {
		core.recoverRead = func(ctx context.Context, group string, pos position) ([]Message, bool, error) {
			return l.readAfter(ctx, l.client, l.historyKey(group), group, pos)
		}
	}
	l.sub = newSubscriber(core, client.Options().Addr, client, false)
	core.mu.Lock()
	l.sub.subLocked(core.instTopic + core.instance)
	core.mu.Unlock()
	l.sub.start()
	return l, nil
}

// NewChannel implements Layer. Names look like "specific.<instance>!<32 random hex>";
// the part before '!' routes a send to the instance that holds it.
func (l *Redis) NewChannel(m groups.Member) (string, error) { return l.newChannel(m) }

// CloseChannel implements Layer. It waits for the UNSUBSCRIBEs of the
// groups the channel was the last local member of.
func (l *Redis) CloseChannel(ctx context.Context, channel string) error {
	return l.closeChannel(ctx, l, channel)
}

// Send implements Layer. A send to a channel of this instance does not
// go through Redis.
func (l *Redis) Send(ctx context.Context, channel string, msg Message) error {
	topic, payload, local, err := l.route(channel, msg)
	if err != nil || local {
		return err
	}
	sent, ttl := l.sentKey(topic, channel+":", msg)
	n, err := publish(ctx, l.client, plainPublishing.plain, sent, ttl, topic, payload)
	return l.published(n, err, fmt.Sprintf("no channel %q", channel))
}

// GroupAdd implements Layer. When the group's subscription is not yet
// confirmed, GroupAdd waits until Redis confirms it. If Redis cannot be
// reached the membership still stands, takes effect when Redis returns,
// and GroupAdd returns an error wrapping ErrUnavailable at once.
func (l *Redis) GroupAdd(ctx context.Context, group, channel string) error {
	return l.groupAdd(ctx, l, group, channel)
}

// GroupDiscard implements Layer. When the channel was the group's last
// local member, it waits for the UNSUBSCRIBE, so that a later GroupSend
// no longer counts this instance.
func (l *Redis) GroupDiscard(ctx context.Context, group, channel string) error {
	return l.groupDiscard(ctx, l, group, channel)
}

// subscribeLocked implements topics: one connection for every topic.
func (l *Redis) subscribeLocked(topic string) { l.sub.subLocked(topic) }

func (l *Redis) unsubscribeLocked(topic string) chan struct{} { return l.sub.unsubLocked(topic) }

func (l *Redis) waitLocked(topic string) (live bool, fail chan struct{}, down bool) {
	return l.sub.liveLocked(topic), l.sub.fail, l.sub.down
}

func (l *Redis) blindLocked(topic string) bool { return l.sub.blindLocked(topic) }

// topics is how a Redis layer finds the subscription connection of a
// group's topic: Redis has one connection, RedisCluster one per master.
// Its methods are called with redisCore.mu held.
type topics interface {
	// subscribeLocked subscribes topic, which got its first local member.
	subscribeLocked(topic string)
	// unsubscribeLocked unsubscribes topic, which lost its last local
	// member, and returns a channel closed once Redis confirms, or nil
	// when there is nothing to wait for.
	unsubscribeLocked(topic string) chan struct{}
	// waitLocked reports whether topic's subscription is confirmed, and
	// if not, what a GroupAdd waits on: fail closes when the connection
	// fails, and down tells that it is down now.
	waitLocked(topic string) (live bool, fail chan struct{}, down bool)
	// blindLocked reports whether topic's subscription was lost and is
	// not restored yet.
	blindLocked(topic string) bool
}

// blindTo returns an error wrapping ErrUnavailable when this instance has
// members of group that a message published now would miss: the
// subscription that carries the group to them was lost and is being
// restored. A group with history recovers such a message from it, so
// only a group without one is refused; the publisher retries (with the
// same idempotency key) rather than be told the message was delivered.
func (c *redisCore) blindTo(t topics, group string) error {
	if c.reg.Len(group) == 0 {
		return nil
	}
	c.mu.Lock()
	blind := t.blindLocked(c.groupTopic + group)
	c.mu.Unlock()
	if blind {
		c.publishErrors.Add(1)
		return fmt.Errorf("%w: this instance's subscription to group %q is being restored after a lost connection; its members here would miss the message", ErrUnavailable, group)
	}
	return nil
}

// closeChannel is CloseChannel for both Redis layers.
func (c *redisCore) closeChannel(ctx context.Context, t topics, channel string) error {
	c.mu.Lock()
	var done []chan struct{}
	for _, g := range c.reg.RemoveChannel(channel) {
		if d := t.unsubscribeLocked(c.groupTopic + g); d != nil {
			done = append(done, d)
		}
	}
	c.mu.Unlock()
	return c.awaitUnsub(ctx, done...)
}

// groupAdd is GroupAdd for both Redis layers.
func (c *redisCore) groupAdd(ctx context.Context, t topics, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	if c.closed.Load() {
		return ErrClosed
	}
	topic := c.groupTopic + group
	c.mu.Lock()
	first, err := c.reg.Join(group, channel)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	if first {
		t.subscribeLocked(topic)
	}
	live, fail, down := t.waitLocked(topic)
	if live {
		c.mu.Unlock()
		return nil
	}
	ready := c.addWaiterLocked(topic)
	c.mu.Unlock()
	return c.await(ctx, topic, ready, fail, down)
}

// groupDiscard is GroupDiscard for both Redis layers.
func (c *redisCore) groupDiscard(ctx context.Context, t topics, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	c.mu.Lock()
	if !c.reg.Leave(group, channel) {
		c.mu.Unlock()
		return nil
	}
	done := t.unsubscribeLocked(c.groupTopic + group)
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	return c.awaitUnsub(ctx, done)
}

// awaitUnsub waits for UNSUBSCRIBEs. Failing to wait is no error: the
// membership is gone either way, and an instance subscribed a little
// longer only receives a message nobody local wants.
func (l *redisCore) awaitUnsub(ctx context.Context, done ...chan struct{}) error {
	for _, d := range done {
		select {
		case <-d:
		case <-ctx.Done():
			return nil
		case <-l.closing:
			return nil
		}
	}
	return nil
}

// GroupSend implements Layer: one script that publishes, whatever the
// size of the group, applied once however often the client retries it
// (see Layer.KeyWindow).
func (l *Redis) GroupSend(ctx context.Context, group string, msg Message) (SendResult, error) {
	if err := l.check(ValidGroupName(group), msg); err != nil {
		return SendResult{}, err
	}
	topic := l.groupTopic + group
	sent, ttl := l.sentKey(topic, "", msg)
	if p, ok := historyFor(l.policies, group); ok {
		return l.groupSendHistory(ctx, l.client, plainPublishing, sent, ttl, l.historyKey(group), group, msg, p)
	}
	if err := l.blindTo(l, group); err != nil {
		return SendResult{}, err
	}
	n, err := publish(ctx, l.client, plainPublishing.plain, sent, ttl, topic, msg.data)
	return l.groupSent("", n, err, group)
}

// KeyWindow implements Layer.
func (c *redisCore) KeyWindow() time.Duration { return KeyWindow }

// GroupSendLocal implements Layer without touching Redis, and so without
// a history id.
func (l *Redis) GroupSendLocal(_ context.Context, group string, msg Message) (SendResult, error) {
	return SendLocal(&l.reg, group, msg, l.closed.Load())
}

// Check implements Layer: Redis answers a PING and the subscription
// connection is established. It answers within a second.
func (l *Redis) Check(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if err := bounded(ctx, func(ctx context.Context) error { return l.client.Ping(ctx).Err() }); err != nil {
		return unavailable(err)
	}
	if !l.sub.up.Load() {
		return fmt.Errorf("%w: subscription connection not established", ErrUnavailable)
	}
	return nil
}

// Close implements Layer. It stops the subscription goroutines and closes
// the subscription connection, but not the client.
func (l *Redis) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	close(l.closing)
	l.sub.stop()
	return nil
}

// checkTimeout bounds Check: a readiness probe must get an answer even
// while a Redis node is frozen, which go-redis would wait on for its
// read timeout and retries.
const checkTimeout = time.Second

// bounded runs ping, giving up after checkTimeout or when ctx ends,
// whichever comes first. A ping given up on finishes in the background,
// within the client's own timeouts.
func bounded(ctx context.Context, ping func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ping(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer to a ping within %v: %w", checkTimeout, ctx.Err())
	}
}

func checkNames(group, channel string) error {
	if err := ValidGroupName(group); err != nil {
		return err
	}
	return ValidChannelName(channel)
}

func unavailable(err error) error {
	if errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
