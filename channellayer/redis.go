package channellayer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/groups"
)

// RedisConfig configures a Redis layer. The zero value works.
type RedisConfig struct {
	// Prefix starts every Redis channel name the layer uses, so that
	// several deployments can share one Redis. Default "herald".
	Prefix string
	// Logger receives connection errors and recoveries. Default
	// slog.Default().
	Logger *slog.Logger
	// MaxBackoff caps the wait between attempts to reach Redis again after
	// the subscription connection failed. Default 2s.
	MaxBackoff time.Duration
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
// Delivery is at most once: messages published while an instance's
// subscription connection is down do not reach that instance. The
// subscription is restored, with every group that has local members,
// as soon as Redis answers again.
type Redis struct {
	client     *redis.Client
	ps         *redis.PubSub
	log        *slog.Logger
	maxBackoff time.Duration

	groupTopic string // prefix of a group's Redis channel
	instTopic  string // prefix of an instance's Redis channel
	instance   string // this instance's part of its channel names
	seq        atomic.Uint64
	reg        groups.Registry

	// mu orders registry changes that make a group gain its first or lose
	// its last local member with the SUBSCRIBE and UNSUBSCRIBE they cause.
	mu      sync.Mutex
	waiters map[string][]chan struct{} // topic -> GroupAdds awaiting confirmation

	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
	up     atomic.Bool
}

var (
	_ Layer       = (*Redis)(nil)
	_ LocalSender = (*Redis)(nil)
	_ Checker     = (*Redis)(nil)
)

// NewRedis returns a layer on client, which it does not close. The
// layer starts one goroutine that reads its subscription; Close stops it.
// NewRedis does not need Redis to be reachable: the layer connects, and
// reconnects, on its own.
func NewRedis(client *redis.Client, cfg RedisConfig) (*Redis, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "herald"
	}
	if err := ValidGroupName(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("channellayer: Redis prefix: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Redis{
		client:     client,
		log:        cfg.Logger,
		maxBackoff: cfg.MaxBackoff,
		groupTopic: cfg.Prefix + ":group:",
		instTopic:  cfg.Prefix + ":inst:",
		instance:   "specific." + randomID(),
		waiters:    make(map[string][]chan struct{}),
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	// Subscribing with no channel creates the PubSub without touching the
	// network; the instance channel is subscribed below, and restored on
	// every reconnect like the others.
	l.ps = client.Subscribe(ctx)
	_ = l.ps.Subscribe(ctx, l.instTopic+l.instance)
	go l.read(ctx)
	return l, nil
}

// read is the only goroutine that reads the subscription.
func (l *Redis) read(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	for {
		v, err := l.ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if l.up.Swap(false) {
				l.log.Warn("channellayer: Redis subscription lost; reconnecting", "err", err)
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
			if v.Kind == "subscribe" {
				if !l.up.Swap(true) {
					l.log.Info("channellayer: Redis subscription established", "prefix", strings.TrimSuffix(l.groupTopic, ":group:"))
				}
				l.confirm(v.Channel)
			}
		case *redis.Message:
			l.dispatch(v.Channel, v.Payload)
		}
	}
}

func (l *Redis) confirm(topic string) {
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

func (l *Redis) dispatch(topic, payload string) {
	switch {
	case strings.HasPrefix(topic, l.groupTopic):
		msg, err := ParseMessage([]byte(payload))
		if err != nil {
			l.log.Warn("channellayer: dropped a malformed group message from Redis", "topic", topic, "err", err)
			return
		}
		l.reg.SendGroup(topic[len(l.groupTopic):], msg.typ, msg.data)
	case strings.HasPrefix(topic, l.instTopic):
		channel, body, ok := strings.Cut(payload, " ")
		if !ok {
			l.log.Warn("channellayer: dropped a malformed channel message from Redis", "topic", topic)
			return
		}
		msg, err := ParseMessage([]byte(body))
		if err != nil {
			l.log.Warn("channellayer: dropped a malformed channel message from Redis", "topic", topic, "err", err)
			return
		}
		l.reg.SendChannel(channel, msg.typ, msg.data)
	}
}

// NewChannel implements Layer. Names look like "specific.<instance>!<n>";
// the part before '!' routes a send to the instance that holds it.
func (l *Redis) NewChannel(m groups.Member) (string, error) {
	if l.closed.Load() {
		return "", ErrClosed
	}
	name := l.instance + "!" + strconv.FormatUint(l.seq.Add(1), 36)
	l.reg.AddChannel(name, m)
	return name, nil
}

// CloseChannel implements Layer.
func (l *Redis) CloseChannel(ctx context.Context, channel string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var topics []string
	for _, g := range l.reg.RemoveChannel(channel) {
		topics = append(topics, l.groupTopic+g)
	}
	return l.unsubscribeLocked(ctx, topics...)
}

// Send implements Layer.
func (l *Redis) Send(ctx context.Context, channel string, msg Message) error {
	if err := l.check(ValidChannelName(channel), msg); err != nil {
		return err
	}
	instance, _, ok := strings.Cut(channel, "!")
	if !ok {
		return fmt.Errorf("%w: no channel %q (not a channel this layer made)", ErrNoReceivers, channel)
	}
	var payload bytes.Buffer
	payload.Grow(len(channel) + 1 + len(msg.data))
	payload.WriteString(channel)
	payload.WriteByte(' ')
	payload.Write(msg.data)
	n, err := l.client.Publish(ctx, l.instTopic+instance, payload.Bytes()).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: no channel %q", ErrNoReceivers, channel)
	}
	return nil
}

// GroupAdd implements Layer. When the channel is the group's first local
// member, GroupAdd waits until Redis confirms the subscription. If Redis
// cannot be reached the membership still stands, takes effect when Redis
// returns, and GroupAdd returns an error wrapping ErrUnavailable.
func (l *Redis) GroupAdd(ctx context.Context, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	if l.closed.Load() {
		return ErrClosed
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

// GroupDiscard implements Layer.
func (l *Redis) GroupDiscard(ctx context.Context, group, channel string) error {
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

func (l *Redis) unsubscribeLocked(ctx context.Context, topics ...string) error {
	if len(topics) == 0 || l.closed.Load() {
		return nil
	}
	// go-redis forgets the topics even when the write fails, so a
	// reconnect will not restore them.
	if err := l.ps.Unsubscribe(ctx, topics...); err != nil {
		return unavailable(err)
	}
	return nil
}

// GroupSend implements Layer: one PUBLISH, whatever the size of the group.
func (l *Redis) GroupSend(ctx context.Context, group string, msg Message) error {
	if err := l.check(ValidGroupName(group), msg); err != nil {
		return err
	}
	n, err := l.client.Publish(ctx, l.groupTopic+group, msg.data).Result()
	if err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: group %q has no member", ErrNoReceivers, group)
	}
	return nil
}

// GroupSendLocal implements LocalSender without touching Redis.
func (l *Redis) GroupSendLocal(_ context.Context, group string, msg Message) error {
	if err := l.check(ValidGroupName(group), msg); err != nil {
		return err
	}
	if l.reg.SendGroup(group, msg.typ, msg.data) == 0 {
		return fmt.Errorf("%w: group %q has no local member", ErrNoReceivers, group)
	}
	return nil
}

// Check implements Checker: Redis answers a PING and the subscription
// connection is established.
func (l *Redis) Check(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	if err := l.client.Ping(ctx).Err(); err != nil {
		return unavailable(err)
	}
	if !l.up.Load() {
		return fmt.Errorf("%w: subscription connection not established", ErrUnavailable)
	}
	return nil
}

// Close implements Layer. It stops the reading goroutine and closes the
// subscription connection, but not the client.
func (l *Redis) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	l.cancel()
	err := l.ps.Close()
	<-l.done
	return err
}

func (l *Redis) check(nameErr error, msg Message) error {
	if nameErr != nil {
		return nameErr
	}
	if !msg.Valid() {
		return fmt.Errorf("%w: zero Message", ErrInvalidMessage)
	}
	if l.closed.Load() {
		return ErrClosed
	}
	return nil
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
