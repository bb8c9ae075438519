package channellayer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/groups"
)

// RedisStats counts the faults a Redis layer has met since it was made.
// Metrics read it; the layer only adds to it.
type RedisStats struct {
	// Reconnects counts subscription connections restored after a loss.
	Reconnects int64
	// PublishErrors counts sends (PUBLISH or SPUBLISH) that failed for
	// want of Redis. Sends that reached nobody are not errors.
	PublishErrors int64
	// SubscribeErrors counts failed attempts to reach Redis for a
	// subscription: lost connections, failed dials and failed
	// SUBSCRIBE or UNSUBSCRIBE writes.
	SubscribeErrors int64
	// Recovered counts messages delivered from a group's history after
	// the subscription connection came back.
	Recovered int64
	// Resyncs counts groups whose members were told to resync because
	// the history could not cover an outage.
	Resyncs int64
}

// minBackoff is the first wait before the layer tries Redis again.
const minBackoff = 50 * time.Millisecond

// redisCore is what the single-Redis and the cluster layers share: names,
// local membership, subscription waiters, dispatch and counters.
type redisCore struct {
	log        *slog.Logger
	maxBackoff time.Duration

	groupTopic string        // prefix of a group's Redis channel
	instTopic  string        // prefix of an instance's Redis channel
	instance   string        // this instance's part of its channel names
	sendSeq    atomic.Uint64 // numbers the records of unkeyed sends
	keys       keyRecords    // keyed sends to this instance's own channels
	reg        groups.Registry

	// mu orders membership changes with the subscription work they cause,
	// and guards every subscriber's bookkeeping. Nothing holding mu waits
	// on the network.
	mu      sync.Mutex
	waiters map[string][]chan struct{} // topic -> GroupAdds awaiting its confirmation

	closed  atomic.Bool
	closing chan struct{} // closed by Close, releases every waiting call

	health          time.Duration // see RedisConfig.HealthInterval
	healthTimeout   time.Duration // see RedisConfig.HealthTimeout
	reconnects      atomic.Int64
	publishErrors   atomic.Int64
	subscribeErrors atomic.Int64
	recovered       atomic.Int64
	resyncs         atomic.Int64

	// History: which groups keep one (RedisConfig.History), the
	// recovery position of each subscribed group that does, and the
	// reader of a group's history for recovery after a lost subscription
	// (nil when no group keeps one).
	policies    []HistoryPolicy
	seenMu      sync.Mutex
	seen        map[string]position
	recoverRead func(ctx context.Context, group string, pos position) ([]Message, bool, error)
}

func newRedisCore(cfg RedisConfig) (*redisCore, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "herald"
	}
	if err := ValidGroupName(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("channellayer: Redis prefix: %w", err)
	}
	policies, err := checkPolicies(cfg.History)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Second
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 2 * time.Second
	}
	c := &redisCore{
		health:        cfg.HealthInterval,
		healthTimeout: cfg.HealthTimeout,
		log:           cfg.Logger,
		maxBackoff:    max(cfg.MaxBackoff, minBackoff),
		policies:      policies,
		groupTopic:    cfg.Prefix + ":group:",
		instTopic:     cfg.Prefix + ":inst:",
		instance:      "specific." + randomID(),
		waiters:       make(map[string][]chan struct{}),
		closing:       make(chan struct{}),
	}
	c.reg.SetMaxGroups(cfg.MaxGroups)
	return c, nil
}

// RedisStats returns the layer's fault counters.
func (c *redisCore) RedisStats() RedisStats {
	return RedisStats{
		Reconnects:      c.reconnects.Load(),
		PublishErrors:   c.publishErrors.Load(),
		SubscribeErrors: c.subscribeErrors.Load(),
		Recovered:       c.recovered.Load(),
		Resyncs:         c.resyncs.Load(),
	}
}

// events returns RedisStats keyed by name, for Stats.Events.
func (c *redisCore) events() map[string]int64 {
	s := c.RedisStats()
	return map[string]int64{
		"reconnects":       s.Reconnects,
		"publish_errors":   s.PublishErrors,
		"subscribe_errors": s.SubscribeErrors,
		"recovered":        s.Recovered,
		"resyncs":          s.Resyncs,
	}
}

func (c *redisCore) newChannel(m groups.Member) (string, error) {
	if c.closed.Load() {
		return "", ErrClosed
	}
	name := c.instance + "!" + LocalName()
	c.reg.AddChannel(name, m)
	return name, nil
}

// route returns the Redis channel and payload that carry msg to channel,
// or local=true when the channel is this instance's own: such sends skip
// Redis, so they work during an outage and right after start.
func (c *redisCore) route(channel string, msg Message) (topic string, payload []byte, local bool, err error) {
	if err := c.check(ValidChannelName(channel), msg); err != nil {
		return "", nil, false, err
	}
	instance, _, ok := strings.Cut(channel, "!")
	if !ok {
		return "", nil, false, fmt.Errorf("%w: no channel %q (not a channel this layer made)", ErrNoReceivers, channel)
	}
	if instance == c.instance {
		if !sendChannelKeyed(&c.keys, &c.reg, channel, msg) {
			return "", nil, true, fmt.Errorf("%w: no channel %q", ErrNoReceivers, channel)
		}
		return "", nil, true, nil
	}
	var b bytes.Buffer
	b.Grow(len(channel) + 1 + len(msg.data))
	b.WriteString(channel)
	b.WriteByte(' ')
	b.Write(msg.data)
	return c.instTopic + instance, b.Bytes(), false, nil
}

// published turns the result of a PUBLISH or SPUBLISH into the layer's
// error, counting failures.
func (c *redisCore) published(n int64, err error, what string) error {
	if err != nil {
		c.publishErrors.Add(1)
		return unavailable(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNoReceivers, what)
	}
	return nil
}

func (c *redisCore) dispatch(topic, payload string) {
	switch {
	case strings.HasPrefix(topic, c.groupTopic):
		c.dispatchGroup(topic, payload)
	case strings.HasPrefix(topic, c.instTopic):
		channel, body, ok := strings.Cut(payload, " ")
		if !ok {
			c.log.Warn("channellayer: dropped a malformed channel message from Redis", "topic", topic)
			return
		}
		msg, err := ParseMessage([]byte(body))
		if err != nil {
			c.log.Warn("channellayer: dropped a malformed channel message from Redis", "topic", topic, "err", err)
			return
		}
		c.reg.SendChannel(channel, msg.typ, msg.data)
	}
}

// addWaiterLocked registers a GroupAdd waiting for topic's subscription.
func (c *redisCore) addWaiterLocked(topic string) chan struct{} {
	ready := make(chan struct{})
	c.waiters[topic] = append(c.waiters[topic], ready)
	return ready
}

func (c *redisCore) releaseWaitersLocked(topic string) {
	for _, w := range c.waiters[topic] {
		close(w)
	}
	delete(c.waiters, topic)
}

// await waits for a subscription: ready closes when it is confirmed, fail
// when the connection it depends on fails. down reports that the
// connection was already failing: the call then returns at once.
func (c *redisCore) await(ctx context.Context, topic string, ready, fail chan struct{}, down bool) error {
	var err error
	if down {
		err = fmt.Errorf("%w: Redis unreachable; the membership stands and takes effect when Redis returns", ErrUnavailable)
	} else {
		select {
		case <-ready:
			return nil
		case <-fail:
			err = fmt.Errorf("%w: Redis connection lost; the membership stands and takes effect when Redis returns", ErrUnavailable)
		case <-c.closing:
			err = ErrClosed
		case <-ctx.Done():
			err = unavailable(ctx.Err())
		}
	}
	c.mu.Lock()
	w := c.waiters[topic]
	for i, x := range w {
		if x == ready {
			w = append(w[:i:i], w[i+1:]...)
			break
		}
	}
	if len(w) == 0 {
		delete(c.waiters, topic)
	} else {
		c.waiters[topic] = w
	}
	c.mu.Unlock()
	select {
	case <-ready: // confirmed meanwhile
		return nil
	default:
		return err
	}
}

func (c *redisCore) check(nameErr error, msg Message) error {
	return CheckSend(nameErr, msg, c.closed.Load())
}

// subOp is one queued SUBSCRIBE or UNSUBSCRIBE of one topic.
type subOp struct {
	sub    bool
	topic  string
	done   chan struct{} // closed once the UNSUBSCRIBE is confirmed or moot; may be nil
	forget bool          // the server already dropped it: expect no confirmation
}

// subscriber owns one subscription connection: to the Redis of a
// single-Redis layer, or to one master of a cluster. Two goroutines serve
// it: the reader, the only one to call Receive, and the writer, which
// sends the queued SUBSCRIBE and UNSUBSCRIBE commands. Membership changes
// only queue work under redisCore.mu, so they never wait on a dial.
type subscriber struct {
	c       *redisCore
	addr    string
	client  *redis.Client // makes the PubSubs
	own     bool          // client is closed with the subscriber
	sharded bool

	// hooks for the cluster layer; called without mu held
	onLost  func(s *subscriber, topic string) // the server dropped a topic we did not drop
	onReply func(s *subscriber, err error)    // an error reply, such as MOVED
	onFail  func(s *subscriber)               // the connection failed, or a new one could not be made
	// before each new connection after a failure: the cluster layer reads
	// the slot map, so that topics whose slot moved meanwhile are not
	// subscribed again on a node that no longer owns them
	onRetry func(ctx context.Context)

	// guarded by c.mu
	want    map[string]struct{}        // topics this connection should carry
	live    map[string]struct{}        // topics confirmed on the current connection
	pending map[string]int             // UNSUBSCRIBEs awaiting confirmation
	unwait  map[string][]chan struct{} // GroupDiscards awaiting an UNSUBSCRIBE
	queue   []subOp
	stale   map[string]struct{} // group topics to recover once subscribed again
	blind   map[string]struct{} // group topics lost with a connection and not yet subscribed again
	ps      *redis.PubSub       // of the current connection
	stopped bool
	down    bool          // an attempt failed since the last confirmation
	fail    chan struct{} // closed and replaced at each failure
	everUp  bool

	wake   chan struct{}
	up     atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newSubscriber(c *redisCore, addr string, client *redis.Client, sharded bool) *subscriber {
	return &subscriber{
		c:       c,
		addr:    addr,
		client:  client,
		sharded: sharded,
		want:    make(map[string]struct{}),
		live:    make(map[string]struct{}),
		pending: make(map[string]int),
		unwait:  make(map[string][]chan struct{}),
		fail:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}
}

func (s *subscriber) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go s.read(ctx)
	go s.write(ctx)
}

// stop ends both goroutines and closes the connection. It waits at most
// for one dial to notice the cancellation.
func (s *subscriber) stop() {
	s.c.mu.Lock()
	s.stopped = true
	ps := s.ps
	s.c.mu.Unlock()
	s.cancel()
	if ps != nil {
		_ = ps.Close()
	}
	s.wg.Wait()
	if s.own {
		_ = s.client.Close()
	}
}

func (s *subscriber) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// subLocked makes the connection carry topic. A group with history gets
// its recovery position now; if the connection is down, the group is
// recovered from there once subscribed, so that what was published
// after it joined reaches it.
func (s *subscriber) subLocked(topic string) {
	if s.c.recoverRead != nil && strings.HasPrefix(topic, s.c.groupTopic) {
		s.c.place(topic[len(s.c.groupTopic):])
		if s.down {
			s.staleLocked(topic)
		}
	}
	if s.down {
		// Not carried until the connection is back (a topic that moved
		// here from a failed master's connection, or a first member
		// that joined during the outage).
		s.blindTopicLocked(topic)
	}
	s.want[topic] = struct{}{}
	s.queue = append(s.queue, subOp{sub: true, topic: topic})
	s.poke()
}

// unsubLocked makes the connection drop topic. The returned channel
// closes once Redis confirmed it, or it no longer matters.
func (s *subscriber) unsubLocked(topic string) chan struct{} {
	delete(s.want, topic)
	delete(s.live, topic)
	delete(s.blind, topic)
	s.forgetHistoryLocked(topic)
	done := make(chan struct{})
	if s.down {
		// The server holds no subscription of ours; the write only makes
		// go-redis forget the topic before it reconnects.
		close(done)
		s.queue = append(s.queue, subOp{topic: topic, forget: true})
	} else {
		s.pending[topic]++
		s.unwait[topic] = append(s.unwait[topic], done)
		s.queue = append(s.queue, subOp{topic: topic, done: done})
	}
	s.poke()
	return done
}

// forgetLocked drops topic without expecting a confirmation, for a topic
// the server no longer serves on this connection: its slot moved, and the
// topic goes to another connection (see staleLocked), so what the layer
// knows of its history position is kept.
func (s *subscriber) forgetLocked(topic string) {
	delete(s.want, topic)
	delete(s.live, topic)
	delete(s.blind, topic)
	delete(s.stale, topic)
	s.queue = append(s.queue, subOp{topic: topic, forget: true})
	s.poke()
}

// blindTopicLocked records that a group topic is not carried until its
// SUBSCRIBE is confirmed: members may miss what is published meanwhile.
func (s *subscriber) blindTopicLocked(topic string) {
	if !strings.HasPrefix(topic, s.c.groupTopic) {
		return
	}
	if s.blind == nil {
		s.blind = make(map[string]struct{})
	}
	s.blind[topic] = struct{}{}
}

// blindLocked reports whether topic was carried by a connection that was
// lost and is not subscribed again yet: a message published to it now
// would miss this instance's members.
func (s *subscriber) blindLocked(topic string) bool {
	_, ok := s.blind[topic]
	return ok
}

// carries reports whether the connection should carry topic.
func (s *subscriber) carries(topic string) bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	_, ok := s.want[topic]
	return ok
}

func (s *subscriber) liveLocked(topic string) bool {
	_, ok := s.live[topic]
	return ok
}

func (s *subscriber) write(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.c.mu.Lock()
		ops, ps := s.queue, s.ps
		s.queue = nil
		s.c.mu.Unlock()
		if ps == nil {
			continue // the reader queues everything again with the next connection
		}
		for i := 0; i < len(ops); {
			// One command for each run of the same kind, at most 512
			// topics; sharded commands take one slot's topics only.
			j := i
			topics := make([]string, 0, 8)
			for j < len(ops) && ops[j].sub == ops[i].sub && j-i < 512 &&
				(!s.sharded || keySlot(ops[j].topic) == keySlot(ops[i].topic)) {
				topics = append(topics, ops[j].topic)
				j++
			}
			err := s.send(ctx, ps, ops[i].sub, topics)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				s.c.subscribeErrors.Add(1)
				s.c.log.Debug("channellayer: Redis subscription command failed", "addr", s.addr, "err", err)
				if !ops[i].sub {
					s.unsubFailed(ops[i:j])
				}
				// A failed SUBSCRIBE is sent again on the next
				// connection, which carries every wanted topic.
			}
			i = j
		}
	}
}

func (s *subscriber) send(ctx context.Context, ps *redis.PubSub, sub bool, topics []string) error {
	switch {
	case sub && s.sharded:
		return ps.SSubscribe(ctx, topics...)
	case sub:
		return ps.Subscribe(ctx, topics...)
	case s.sharded:
		return ps.SUnsubscribe(ctx, topics...)
	default:
		return ps.Unsubscribe(ctx, topics...)
	}
}

// unsubFailed settles UNSUBSCRIBEs that could not be written: go-redis
// has forgotten the topics, and the broken connection carries nothing.
func (s *subscriber) unsubFailed(ops []subOp) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	for _, op := range ops {
		if op.done == nil {
			continue
		}
		s.settleUnsubLocked(op.topic)
	}
}

func (s *subscriber) settleUnsubLocked(topic string) {
	if n := s.pending[topic]; n > 1 {
		s.pending[topic] = n - 1
	} else {
		delete(s.pending, topic)
	}
	if w := s.unwait[topic]; len(w) > 0 {
		close(w[0])
		if len(w) == 1 {
			delete(s.unwait, topic)
		} else {
			s.unwait[topic] = w[1:]
		}
	}
}

// read serves one connection after another. Each connection gets a
// fresh PubSub that the layer subscribes itself, topic by topic (slot by
// slot on a cluster), rather than relying on go-redis' own resubscribe:
// that sends every shard channel in one SSUBSCRIBE, which a cluster
// refuses (CROSSSLOT) as soon as they span two slots, and it can record a
// SUBSCRIBE that never reaches the new connection.
func (s *subscriber) read(ctx context.Context) {
	defer s.wg.Done()
	backoff := minBackoff
	for failed := false; ; failed = true {
		if failed && s.onRetry != nil {
			s.onRetry(ctx)
			if ctx.Err() != nil {
				return
			}
		}
		// With no channel, Subscribe does not touch the network; the
		// first Receive or SUBSCRIBE dials.
		ps := s.client.Subscribe(context.Background())
		s.c.mu.Lock()
		if s.stopped {
			s.c.mu.Unlock()
			_ = ps.Close()
			return
		}
		s.ps = ps
		s.resyncLocked()
		s.c.mu.Unlock()

		replied, err := s.receive(ctx, ps)
		_ = ps.Close()
		if ctx.Err() != nil {
			return
		}
		s.failed(err)
		if replied {
			backoff = minBackoff
		}
		// Jittered, so that many instances do not return in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, s.c.maxBackoff)
	}
}

// receive reads ps until its connection fails. replied reports whether
// Redis answered at all.
//
// A connection whose path to Redis dies silently, or whose server stops
// answering (a frozen node), would block Receive until TCP gives up,
// minutes later, while the instance misses its groups' traffic. So a
// connection silent for the health interval is pinged, and one that
// stays silent for the health timeout after that is given up.
func (s *subscriber) receive(ctx context.Context, ps *redis.PubSub) (replied bool, err error) {
	var pingedAt time.Time // zero: no ping awaiting an answer
	for {
		wait := s.c.health
		if !pingedAt.IsZero() {
			wait = max(time.Millisecond, s.c.healthTimeout-time.Since(pingedAt))
		}
		v, err := ps.ReceiveTimeout(ctx, wait)
		if err != nil && isTimeout(err) && ctx.Err() == nil {
			if !pingedAt.IsZero() {
				if time.Since(pingedAt) >= s.c.healthTimeout {
					return replied, fmt.Errorf("no answer to a ping within %v", s.c.healthTimeout)
				}
				continue
			}
			pingedAt = time.Now()
			if err := ps.Ping(ctx); err != nil {
				return replied, err
			}
			continue
		}
		pingedAt = time.Time{}
		if err != nil {
			if ctx.Err() == nil && isErrorReply(err) {
				replied = true
				s.c.log.Debug("channellayer: Redis error reply on a subscription connection", "addr", s.addr, "err", err)
				if s.onReply != nil {
					s.onReply(s, err)
				}
				continue
			}
			return replied, err
		}
		replied = true
		switch v := v.(type) {
		case *redis.Subscription:
			s.subscription(v)
		case *redis.Message:
			if s.sharded && !s.carries(v.Channel) {
				// A topic this connection no longer carries: its slot
				// moved, or its master was replaced while frozen and
				// now runs what was queued on it before it steps down.
				// The topic's new home delivers the group's messages.
				continue
			}
			s.c.dispatch(v.Channel, v.Payload)
		}
	}
}

func (s *subscriber) failed(err error) {
	s.c.subscribeErrors.Add(1)
	s.c.mu.Lock()
	wasUp := s.up.Swap(false)
	first := !s.down
	s.down = true
	if first {
		close(s.fail)
		s.fail = make(chan struct{})
	}
	clear(s.live)
	for topic := range s.want {
		s.staleLocked(topic)
		if strings.HasPrefix(topic, s.c.groupTopic) {
			if s.blind == nil {
				s.blind = make(map[string]struct{})
			}
			s.blind[topic] = struct{}{}
		}
	}
	// The server dropped every subscription of the lost connection.
	for topic := range s.pending {
		for range s.pending[topic] {
			s.settleUnsubLocked(topic)
		}
	}
	s.c.mu.Unlock()
	if wasUp {
		s.c.log.Warn("channellayer: Redis subscription connection lost; reconnecting", "addr", s.addr, "err", err)
	}
	if s.onFail != nil {
		s.onFail(s)
	}
}

func (s *subscriber) subscription(v *redis.Subscription) {
	var lost, restored, established, recover, missed bool
	s.c.mu.Lock()
	switch v.Kind {
	case "subscribe", "ssubscribe":
		if !s.up.Swap(true) {
			s.down = false
			if s.everUp {
				restored = true
			} else {
				established = true
			}
			s.everUp = true
		}
		if _, wanted := s.want[v.Channel]; wanted && s.pending[v.Channel] == 0 {
			s.live[v.Channel] = struct{}{}
			if _, ok := s.blind[v.Channel]; ok {
				delete(s.blind, v.Channel)
				missed = true
			}
			s.c.releaseWaitersLocked(v.Channel)
			if _, ok := s.stale[v.Channel]; ok {
				delete(s.stale, v.Channel)
				recover = true
			}
		}
	case "unsubscribe", "sunsubscribe":
		if s.pending[v.Channel] > 0 {
			s.settleUnsubLocked(v.Channel)
		} else if _, wanted := s.want[v.Channel]; wanted {
			// Not asked for: the slot moved to another shard.
			delete(s.live, v.Channel)
			lost = true
		}
	}
	s.c.mu.Unlock()
	switch {
	case established:
		s.c.log.Info("channellayer: Redis subscription connection established", "addr", s.addr)
	case restored:
		s.c.reconnects.Add(1)
		s.c.log.Info("channellayer: Redis subscription connection restored", "addr", s.addr)
	}
	if lost && s.onLost != nil {
		s.onLost(s, v.Channel)
	}
	if !strings.HasPrefix(v.Channel, s.c.groupTopic) {
		return
	}
	group := v.Channel[len(s.c.groupTopic):]
	_, history := historyFor(s.c.policies, group)
	switch {
	case recover && history:
		// On the reader, before any later message of the group.
		s.c.recoverGroup(group)
	case missed && !history && s.c.reg.Len(group) > 0:
		// A group without history that was not carried for a while: what
		// was published meanwhile is gone, and its members are told so,
		// before any later message.
		s.c.resyncs.Add(1)
		s.c.reg.SendGroup(group, ResyncType, resyncFrame(group))
	}
}

// staleLocked marks a group topic to be recovered from its history once
// it is subscribed on this connection: what the group's members missed
// while it was not (the connection was lost, or the group's slot was
// moving to this master) goes to them first, from the group's position.
func (s *subscriber) staleLocked(topic string) {
	if s.c.recoverRead == nil || !strings.HasPrefix(topic, s.c.groupTopic) {
		return
	}
	if s.stale == nil {
		s.stale = make(map[string]struct{})
	}
	s.stale[topic] = struct{}{}
}

// forgetHistoryLocked drops what the layer knows of a group topic's
// history position: once this instance has no member left, a later
// member starts from the live stream, not from what others missed.
func (s *subscriber) forgetHistoryLocked(topic string) {
	delete(s.stale, topic)
	if strings.HasPrefix(topic, s.c.groupTopic) {
		s.c.forgetSeen(topic[len(s.c.groupTopic):])
	}
}

// resyncLocked replaces the queue with SUBSCRIBEs of every wanted topic,
// for a new connection, grouped by slot on a cluster.
func (s *subscriber) resyncLocked() {
	topics := make([]string, 0, len(s.want))
	for topic := range s.want {
		topics = append(topics, topic)
	}
	if s.sharded {
		slices.SortFunc(topics, func(a, b string) int { return keySlot(a) - keySlot(b) })
	}
	s.queue = s.queue[:0]
	for _, topic := range topics {
		s.queue = append(s.queue, subOp{sub: true, topic: topic})
	}
	s.poke()
}

// isErrorReply reports an error Redis answered with, as opposed to a
// broken connection.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isErrorReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.ErrClosed)
}
