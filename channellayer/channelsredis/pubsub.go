package channelsredis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// PubSubConfig configures a PubSub layer. The zero value works and
// matches channels_redis's defaults.
type PubSubConfig struct {
	// Prefix starts every Redis channel name ("prefix"). Default "asgi".
	Prefix string
	// SymmetricEncryptionKeys turns on Fernet encryption of every message
	// ("symmetric_encryption_keys"), as channels_redis releases after
	// 4.0.0 do for this layer; 4.0.0 (Debian 12's) cannot encrypt pub/sub
	// traffic, so leave this empty with it.
	// The first key encrypts; all decrypt.
	SymmetricEncryptionKeys []string
	// Logger receives dropped messages and connection errors. Default
	// slog.Default().
	Logger *slog.Logger
	// MaxBackoff caps the wait between attempts to reach Redis again after
	// the subscription connection failed. Default 2s.
	MaxBackoff time.Duration
	// MaxGroups caps the distinct groups this instance holds at once
	// (those with a local member, each a subscription on Redis): a
	// GroupAdd that would create one more fails with an error wrapping
	// groups.ErrGroupLimit. Sends are not limited. 0: no cap.
	MaxGroups int
}

// PubSub is a channellayer.Layer that speaks channels_redis's
// RedisPubSubChannelLayer format: a group is the Redis channel
// <prefix>__group__<group>, a channel name is itself a Redis channel,
// and a message is a msgpack map.
//
// An instance holds one subscription connection. It subscribes to a
// group while it has a local member, and to one pattern covering every
// channel name it hands out (<prefix>specific.<id>!<32 random hex>), so a send from
// Django reaches the connection it names. Delivery is at most once, as
// with channels_redis: what is published while the connection is down
// is lost.
type PubSub struct {
	client     *redis.Client
	ps         *redis.PubSub
	log        *slog.Logger
	crypt      *crypter
	maxBackoff time.Duration

	groupTopic string // prefix + "__group__"
	process    string // prefix + "specific.<id>!"
	pattern    string // process + "*"
	reg        groups.Registry

	// mu orders a group's first join and last leave with the SUBSCRIBE and
	// UNSUBSCRIBE they cause.
	mu      sync.Mutex
	waiters map[string][]chan struct{} // topic -> GroupAdds awaiting confirmation

	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
	up     atomic.Bool
}

var _ channellayer.Layer = (*PubSub)(nil)

// NewPubSub returns a PubSub layer on client, which it does not close. It
// starts one goroutine that reads the subscription; Close stops it. Redis
// need not be reachable yet.
func NewPubSub(client *redis.Client, cfg PubSubConfig) (*PubSub, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "asgi"
	}
	if strings.ContainsAny(cfg.Prefix, " \r\n*?[]\\") {
		return nil, fmt.Errorf("channelsredis: prefix %q holds white space or a glob character", cfg.Prefix)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	crypt, err := newCrypter(cfg.SymmetricEncryptionKeys, 0)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &PubSub{
		client:     client,
		log:        cfg.Logger,
		crypt:      crypt,
		maxBackoff: cfg.MaxBackoff,
		groupTopic: cfg.Prefix + "__group__",
		process:    cfg.Prefix + "specific." + processID() + "!",
		waiters:    make(map[string][]chan struct{}),
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	if err := channellayer.ValidChannelName(l.process + channellayer.LocalName()); err != nil {
		cancel()
		return nil, fmt.Errorf("channelsredis: prefix %q: %w", cfg.Prefix, err)
	}
	l.pattern = l.process + "*"
	l.reg.SetMaxGroups(cfg.MaxGroups)
	// Subscribing to nothing makes the PubSub without touching the
	// network; the pattern is restored on every reconnect like the groups.
	l.ps = client.Subscribe(ctx)
	_ = l.ps.PSubscribe(ctx, l.pattern)
	go l.read(ctx)
	return l, nil
}

// read is the only goroutine that reads the subscription.
func (l *PubSub) read(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	for {
		v, err := l.ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if l.up.Swap(false) {
				l.log.Warn("channelsredis: subscription lost; reconnecting", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, l.maxBackoff)
			continue
		}
		backoff = 50 * time.Millisecond
		switch v := v.(type) {
		case *redis.Subscription:
			switch v.Kind {
			case "psubscribe":
				l.up.Store(true)
			case "subscribe":
				l.confirm(v.Channel)
			}
		case *redis.Message:
			l.dispatch(v.Channel, v.Payload)
		}
	}
}

func (l *PubSub) confirm(topic string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.waiters[topic]
	if len(w) == 0 {
		return
	}
	close(w[0])
	if len(w) == 1 {
		delete(l.waiters, topic)
	} else {
		l.waiters[topic] = w[1:]
	}
}

func (l *PubSub) dispatch(topic, payload string) {
	data := []byte(payload)
	if l.crypt != nil {
		var err error
		if data, err = l.crypt.open(data); err != nil {
			l.log.Warn("channelsredis: dropped a message", "topic", topic, "err", err)
			return
		}
	}
	_, msg, err := decodeMessage(data)
	if err != nil {
		l.log.Warn("channelsredis: dropped a message", "topic", topic, "err", err)
		return
	}
	if group, ok := strings.CutPrefix(topic, l.groupTopic); ok {
		l.reg.SendGroup(group, msg.Type(), msg.Bytes())
		return
	}
	l.reg.SendChannel(topic, msg.Type(), msg.Bytes())
}

func (l *PubSub) encode(msg channellayer.Message) ([]byte, error) {
	b, err := encodeBody(msg)
	if err != nil {
		return nil, err
	}
	data := b.frame(nil)
	if l.crypt != nil {
		data = l.crypt.seal(data)
	}
	return data, nil
}

// NewChannel implements channellayer.Layer. Names look like
// "<prefix>specific.<32 hex>!<32 random hex>"; a PUBLISH to the name reaches this
// instance through its pattern subscription.
func (l *PubSub) NewChannel(m groups.Member) (string, error) {
	if l.closed.Load() {
		return "", channellayer.ErrClosed
	}
	name := l.process + channellayer.LocalName()
	l.reg.AddChannel(name, m)
	return name, nil
}

// CloseChannel implements channellayer.Layer.
func (l *PubSub) CloseChannel(ctx context.Context, channel string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var topics []string
	for _, g := range l.reg.RemoveChannel(channel) {
		topics = append(topics, l.groupTopic+g)
	}
	return l.unsubscribeLocked(ctx, topics...)
}

// Send implements channellayer.Layer: one PUBLISH to the channel's name.
// It fails with ErrNoReceivers when nobody subscribes to it.
func (l *PubSub) Send(ctx context.Context, channel string, msg channellayer.Message) error {
	if err := l.check(channellayer.ValidChannelName(channel), msg); err != nil {
		return err
	}
	data, err := l.encode(msg)
	if err != nil {
		return err
	}
	n, err := l.client.Publish(ctx, channel, data).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: no channel %q", channellayer.ErrNoReceivers, channel)
	}
	return nil
}

// GroupAdd implements channellayer.Layer. When the channel is the group's
// first local member, GroupAdd waits until Redis confirms the
// subscription. If Redis cannot be reached the membership still stands,
// takes effect when Redis returns, and GroupAdd returns an error wrapping
// channellayer.ErrUnavailable.
func (l *PubSub) GroupAdd(ctx context.Context, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	if l.closed.Load() {
		return channellayer.ErrClosed
	}
	l.mu.Lock()
	first, err := l.reg.Join(group, channel)
	if err != nil || !first {
		l.mu.Unlock()
		return err
	}
	topic := l.groupTopic + group
	ready := make(chan struct{})
	l.waiters[topic] = append(l.waiters[topic], ready)
	err = l.ps.Subscribe(ctx, topic)
	l.mu.Unlock()
	if err != nil {
		return unavailable(err)
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return unavailable(ctx.Err())
	}
}

// GroupDiscard implements channellayer.Layer.
func (l *PubSub) GroupDiscard(ctx context.Context, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.reg.Leave(group, channel) {
		return nil
	}
	return l.unsubscribeLocked(ctx, l.groupTopic+group)
}

func (l *PubSub) unsubscribeLocked(ctx context.Context, topics ...string) error {
	if len(topics) == 0 || l.closed.Load() {
		return nil
	}
	return unavailable(l.ps.Unsubscribe(ctx, topics...))
}

// GroupSend implements channellayer.Layer: one PUBLISH, whatever the
// size of the group. It fails with ErrNoReceivers when no process, Django
// or Herald, subscribes to the group.
func (l *PubSub) GroupSend(ctx context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	if err := l.check(channellayer.ValidGroupName(group), msg); err != nil {
		return channellayer.SendResult{}, err
	}
	data, err := l.encode(msg)
	if err != nil {
		return channellayer.SendResult{}, err
	}
	n, err := l.client.Publish(ctx, l.groupTopic+group, data).Result()
	if err != nil {
		return channellayer.SendResult{}, unavailable(err)
	}
	if n == 0 {
		return channellayer.SendResult{}, fmt.Errorf("%w: group %q has no member", channellayer.ErrNoReceivers, group)
	}
	return channellayer.SendResult{Delivered: true}, nil
}

// GroupSendLocal implements channellayer.Layer without touching Redis.
func (l *PubSub) GroupSendLocal(_ context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendLocal(&l.reg, group, msg, l.closed.Load())
}

// Check implements channellayer.Layer: Redis answers a PING and the
// subscription connection is established.
func (l *PubSub) Check(ctx context.Context) error {
	if l.closed.Load() {
		return channellayer.ErrClosed
	}
	if err := l.client.Ping(ctx).Err(); err != nil {
		return unavailable(err)
	}
	if !l.up.Load() {
		return fmt.Errorf("%w: subscription connection not established", channellayer.ErrUnavailable)
	}
	return nil
}

// Close implements channellayer.Layer. It stops the reading goroutine and
// closes the subscription connection, but not the client.
func (l *PubSub) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.cancel()
	err := l.ps.Close()
	<-l.done
	return err
}

func (l *PubSub) check(nameErr error, msg channellayer.Message) error {
	return channellayer.CheckSend(nameErr, msg, l.closed.Load())
}
