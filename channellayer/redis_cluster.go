package channellayer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/groups"
)

// RedisCluster is a Layer on the sharded pub/sub of a Redis Cluster
// (Redis 7 or later), shared by every instance that uses the same cluster
// and Prefix. It behaves as Redis does, but a group's traffic flows only
// through the master that owns the slot of the group's Redis channel:
// sends are SPUBLISH, subscriptions SSUBSCRIBE, so adding masters adds
// capacity.
//
// The layer holds one subscription connection to each master that owns
// a channel it needs (the groups with local members, and the instance's
// own channel), and manages them itself rather than through go-redis'
// ClusterClient.SSubscribe, whose single connection cannot span shards.
// When a slot moves (Redis drops the shard channel with an unasked
// SUNSUBSCRIBE, or answers MOVED) or a master fails, the layer reads the
// slot map again and subscribes on the new owner.
//
// A group's history is a stream whose key carries the group's shard
// channel as its hash tag, so that it lives in the channel's slot and one
// script on the owning master keeps and publishes each message.
type RedisCluster struct {
	*redisCore
	client *redis.ClusterClient

	refresh chan struct{} // asks the refresh goroutine to read the slot map
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// guarded by mu
	owner   []string                 // slot -> master address; nil until first read
	home    map[string]*subscriber   // topic -> the connection that carries it
	adrift  map[string]bool          // topics whose slot left their connection, not homed again yet
	shards  map[string]*subscriber   // master address -> its connection
	nodes   map[string]bool          // every node of the last slot map
	probes  map[string]*redis.Client // clients that ask nodes for the slot map
	mapDown bool                     // the last attempt to read the slot map failed
	mapFail chan struct{}            // closed and replaced at each failed read
}

var _ Layer = (*RedisCluster)(nil)

// NewRedisCluster returns a layer on client, which it does not close.
// Its subscription connections use client's options (credentials, TLS,
// timeouts) towards each master. NewRedisCluster does not need the
// cluster to be reachable: the layer connects, and reconnects, on its own.
func NewRedisCluster(client *redis.ClusterClient, cfg RedisConfig) (*RedisCluster, error) {
	core, err := newRedisCore(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &RedisCluster{
		redisCore: core,
		client:    client,
		refresh:   make(chan struct{}, 1),
		cancel:    cancel,
		home:      make(map[string]*subscriber),
		adrift:    make(map[string]bool),
		shards:    make(map[string]*subscriber),
		probes:    make(map[string]*redis.Client),
		mapFail:   make(chan struct{}),
	}
	if len(core.policies) > 0 {
		core.recoverRead = l.recoverRead
	}
	l.refresh <- struct{}{}
	l.wg.Add(1)
	go l.refreshLoop(ctx)
	return l, nil
}

func (l *RedisCluster) pokeRefresh() {
	select {
	case l.refresh <- struct{}{}:
	default:
	}
}

// refreshLoop is the only goroutine that reads the slot map.
func (l *RedisCluster) refreshLoop(ctx context.Context) {
	defer l.wg.Done()
	backoff := minBackoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.refresh:
		}
		err := l.readSlots(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil && !l.waiting() {
			backoff = minBackoff
			continue
		}
		if err == nil {
			// Groups are still homed on a master that does not answer:
			// read again until its replica shows up as the owner.
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, l.maxBackoff)
			l.pokeRefresh()
			continue
		}
		l.subscribeErrors.Add(1)
		l.log.Warn("channellayer: cannot read the Redis Cluster slot map; retrying", "err", err)
		l.mu.Lock()
		if !l.mapDown {
			l.mapDown = true
			close(l.mapFail)
			l.mapFail = make(chan struct{})
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, l.maxBackoff)
		l.pokeRefresh()
	}
}

// readSlots reads the slot map, moves every topic to its owner and stops
// the connections no longer needed.
func (l *RedisCluster) readSlots(ctx context.Context) error {
	idle, err := l.moveSlots(ctx, true)
	for _, s := range idle {
		s.stop()
	}
	return err
}

// moveSlots reads the slot map and moves every topic to its owner. With
// prune, it also forgets the connections no longer needed and returns
// them, to be stopped; a subscription connection's own goroutine, which
// may be one of them, leaves that to the refresh goroutine.
func (l *RedisCluster) moveSlots(ctx context.Context, prune bool) ([]*subscriber, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	slots, err := l.askSlots(ctx)
	if err != nil {
		return nil, err
	}
	owner := make([]string, slotCount)
	nodes := map[string]bool{}
	for _, s := range slots {
		if len(s.Nodes) == 0 || s.Start < 0 || s.End >= slotCount {
			continue
		}
		for i := s.Start; i <= s.End; i++ {
			owner[i] = s.Nodes[0].Addr
		}
		for _, n := range s.Nodes {
			nodes[n.Addr] = true
		}
	}
	var idle []*subscriber
	l.mu.Lock()
	l.owner = owner
	l.nodes = nodes
	l.mapDown = false
	l.homeLocked(l.instTopic+l.instance, false)
	for _, g := range l.reg.Groups() {
		l.homeLocked(l.groupTopic+g, false)
	}
	masters := make(map[string]bool)
	for _, a := range owner {
		masters[a] = true
	}
	for addr, s := range l.shards {
		if prune && len(s.want) == 0 && !masters[addr] {
			delete(l.shards, addr)
			idle = append(idle, s)
		}
	}
	l.mu.Unlock()
	return idle, nil
}

// waiting reports whether some wanted topic is homed on a connection
// that is down.
func (l *RedisCluster) waiting() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.shards {
		if len(s.want) > 0 && s.down {
			return true
		}
	}
	return false
}

// downLocked returns the masters whose subscription connections carry
// topics and are down.
func (l *RedisCluster) downLocked() map[string]bool {
	down := map[string]bool{}
	for addr, s := range l.shards {
		if len(s.want) > 0 && s.down {
			down[addr] = true
		}
	}
	return down
}

// askSlots asks every node the layer knows of (those of the last slot
// map, replicas included, and the client's seed addresses) for the slot
// map at once: a frozen node answers nothing, and the replica that takes
// over from it must be heard without waiting on it. Of the answers that
// come within slotWait of the first, it takes the one the most nodes
// gave, and of those the one that gives the fewest slots to masters this
// layer cannot reach, as the freshest news of a failover. A single node
// is never believed against the others: a master that was replaced while
// it was down or frozen claims its old slots for a moment when it
// returns, until the cluster tells it to follow its replacement, and a
// layer that believed it would subscribe on what is by then a replica,
// where publications still arrive but no send counts them.
func (l *RedisCluster) askSlots(ctx context.Context) ([]redis.ClusterSlot, error) {
	l.mu.Lock()
	down := l.downLocked()
	addrs := make([]string, 0, len(l.nodes)+len(l.client.Options().Addrs))
	for a := range l.nodes {
		addrs = append(addrs, a)
	}
	for _, a := range l.client.Options().Addrs {
		if !l.nodes[a] {
			addrs = append(addrs, a)
		}
	}
	clients := make([]*redis.Client, len(addrs))
	for i, a := range addrs {
		c := l.probes[a]
		if c == nil {
			c = redis.NewClient(nodeOptions(l.client.Options(), a))
			l.probes[a] = c
		}
		clients[i] = c
	}
	l.mu.Unlock()
	type answer struct {
		slots []redis.ClusterSlot
		err   error
	}
	answers := make(chan answer, len(clients))
	for _, c := range clients {
		go func() {
			slots, err := c.ClusterSlots(ctx).Result()
			answers <- answer{slots, err}
		}()
	}
	type view struct {
		slots []redis.ClusterSlot
		votes int
		down  int // slots given to masters this layer cannot reach
	}
	views := map[string]*view{}
	err := errors.New("no node to ask")
	var wait <-chan time.Time
collect:
	for range clients {
		select {
		case a := <-answers:
			if a.err != nil || len(a.slots) == 0 {
				if a.err != nil {
					err = a.err
				}
				continue
			}
			k := slotsKey(a.slots)
			v := views[k]
			if v == nil {
				v = &view{slots: a.slots}
				for _, s := range a.slots {
					if len(s.Nodes) > 0 && down[s.Nodes[0].Addr] {
						v.down += s.End - s.Start + 1
					}
				}
				views[k] = v
			}
			v.votes++
			if wait == nil {
				wait = time.After(slotWait)
			}
		case <-wait:
			break collect
		case <-ctx.Done():
			if len(views) == 0 {
				return nil, ctx.Err()
			}
			break collect
		}
	}
	var best *view
	for _, v := range views {
		if best == nil || v.votes > best.votes || v.votes == best.votes && v.down < best.down {
			best = v
		}
	}
	if best == nil {
		return nil, err
	}
	return best.slots, nil
}

// slotsKey identifies a slot map by who owns what, so that identical
// answers from several nodes count as one view.
func slotsKey(slots []redis.ClusterSlot) string {
	parts := make([]string, 0, len(slots))
	for _, s := range slots {
		owner := ""
		if len(s.Nodes) > 0 {
			owner = s.Nodes[0].Addr
		}
		parts = append(parts, strconv.Itoa(s.Start)+"-"+strconv.Itoa(s.End)+"@"+owner)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// slotWait is how long askSlots waits for a better answer than the
// first.
const slotWait = 200 * time.Millisecond

// homeLocked puts topic on the connection to the master that owns it,
// moving it there if it is elsewhere. Without a slot map it does
// nothing: the first read homes every wanted topic. fresh tells a topic
// that just got its first local member, which has missed nothing yet.
func (l *RedisCluster) homeLocked(topic string, fresh bool) {
	if l.owner == nil {
		return
	}
	addr := l.owner[keySlot(topic)]
	if addr == "" {
		return
	}
	cur := l.home[topic]
	if cur != nil && cur.addr == addr {
		return
	}
	moved := cur != nil || l.adrift[topic]
	delete(l.adrift, topic)
	if cur != nil {
		cur.forgetLocked(topic)
	}
	s := l.shardLocked(addr)
	// A topic that moved here may have missed messages on the way.
	if !fresh {
		s.staleLocked(topic)
	}
	s.subLocked(topic)
	if moved {
		// Between the two subscriptions nobody here listened: a group
		// without history is told so once subscribed here, and sends
		// through this instance are refused until then (see blindLocked).
		s.blindTopicLocked(topic)
	}
	l.home[topic] = s
}

// unhomeLocked drops topic from its connection.
func (l *RedisCluster) unhomeLocked(topic string) chan struct{} {
	s := l.home[topic]
	if s == nil {
		return nil
	}
	delete(l.home, topic)
	delete(l.adrift, topic)
	return s.unsubLocked(topic)
}

// shardLocked returns the subscription connection to addr, starting it
// if needed. Starting does not touch the network.
func (l *RedisCluster) shardLocked(addr string) *subscriber {
	if s := l.shards[addr]; s != nil {
		return s
	}
	s := newSubscriber(l.redisCore, addr, redis.NewClient(nodeOptions(l.client.Options(), addr)), true)
	s.own = true
	s.onLost = l.lost
	s.onReply = l.reply
	// Every failure, not only the first: while a master is down its
	// replica may take over, and only the slot map tells.
	s.onFail = func(*subscriber) { l.pokeRefresh() }
	// A master that was replaced while down comes back claiming its old
	// slots for a moment, then follows its replacement as a replica,
	// which keeps delivering the shard's publications to its subscribers
	// though no send counts them: a group subscribed there again would be
	// answered no_receivers while its members get the messages. So the
	// slot map is read before each new connection, as the most nodes see
	// it, and only the topics this node still owns are subscribed again.
	s.onRetry = func(ctx context.Context) {
		if _, err := l.moveSlots(ctx, false); err == nil {
			l.pokeRefresh() // which stops the connections no longer needed
		}
	}
	l.shards[addr] = s
	s.start()
	return s
}

// lost handles a shard channel Redis dropped without being asked: its
// slot moved to another master.
func (l *RedisCluster) lost(s *subscriber, topic string) {
	l.mu.Lock()
	if l.home[topic] == s {
		delete(l.home, topic)
		s.forgetLocked(topic)
		l.adrift[topic] = true
	}
	l.mu.Unlock()
	l.pokeRefresh()
}

// reply handles an error reply on a subscription connection. A MOVED
// names the slot's new owner: the topics of that slot go there at once,
// and the slot map is read again.
func (l *RedisCluster) reply(s *subscriber, err error) {
	slot, addr, ok := movedTo(err)
	if !ok {
		return
	}
	l.mu.Lock()
	if l.owner != nil {
		l.owner[slot] = addr
	}
	for topic := range s.want {
		if keySlot(topic) == slot {
			delete(s.pending, topic)
			l.homeLocked(topic, false)
		}
	}
	l.mu.Unlock()
	l.pokeRefresh()
}

// nodeOptions derives the options of a connection to one master from
// the cluster client's.
//
// go-redis builds its own node options from ClusterOptions in an
// unexported method, and its public ways to a node's options or client
// (ClusterOptions.NewClient, called only by the cluster client for its
// own nodes; a node client's Options through MasterForKey or
// ForEachShard) need the cluster's slot map first, which the layer must
// not wait for: its connections start without touching the network, and
// the slot map is read through probes built here. So the fields are
// copied by hand, and TestNodeOptionsCoverClusterOptions fails when
// go-redis adds a field to ClusterOptions that is neither copied here nor
// listed there as deliberately left out.
func nodeOptions(co *redis.ClusterOptions, addr string) *redis.Options {
	return &redis.Options{
		Addr:                         addr,
		ClientName:                   co.ClientName,
		Dialer:                       co.Dialer,
		OnConnect:                    co.OnConnect,
		Protocol:                     co.Protocol,
		Username:                     co.Username,
		Password:                     co.Password,
		CredentialsProvider:          co.CredentialsProvider,
		CredentialsProviderContext:   co.CredentialsProviderContext,
		StreamingCredentialsProvider: co.StreamingCredentialsProvider,
		DialTimeout:                  co.DialTimeout,
		DialerRetries:                co.DialerRetries,
		DialerRetryTimeout:           co.DialerRetryTimeout,
		DialerRetryBackoff:           co.DialerRetryBackoff,
		ReadTimeout:                  co.ReadTimeout,
		WriteTimeout:                 co.WriteTimeout,
		ContextTimeoutEnabled:        co.ContextTimeoutEnabled,
		ReadBufferSize:               co.ReadBufferSize,
		WriteBufferSize:              co.WriteBufferSize,
		TLSConfig:                    co.TLSConfig,
		DisableIdentity:              co.DisableIdentity,
		DisableIndentity:             co.DisableIndentity, //nolint:staticcheck // the deprecated spelling still works
		IdentitySuffix:               co.IdentitySuffix,
		UnstableResp3:                co.UnstableResp3,
		PoolSize:                     1, // only the subscription connection is used
	}
}

// NewChannel implements Layer.
func (l *RedisCluster) NewChannel(m groups.Member) (string, error) { return l.newChannel(m) }

// CloseChannel implements Layer.
func (l *RedisCluster) CloseChannel(ctx context.Context, channel string) error {
	return l.closeChannel(ctx, l, channel)
}

// Send implements Layer: one SPUBLISH to the shard of the instance
// holding the channel. A send to a channel of this instance does not go
// through Redis.
func (l *RedisCluster) Send(ctx context.Context, channel string, msg Message) error {
	topic, payload, local, err := l.route(channel, msg)
	if err != nil || local {
		return err
	}
	n, err := l.spublish(ctx, topic, channel+":", payload, msg)
	return l.follow(l.published(n, err, fmt.Sprintf("no channel %q", channel)))
}

// follow has the slot map read again, by go-redis and by the layer, after
// a send found a master unreachable: a replica may have taken over, which
// go-redis would otherwise learn only at its next periodic reload (60 s by
// default), failing every send to those slots until then.
func (l *RedisCluster) follow(err error) error {
	if errors.Is(err, ErrUnavailable) {
		l.client.ReloadState(context.Background())
		l.pokeRefresh()
	}
	return err
}

// GroupAdd implements Layer, as Redis.GroupAdd does.
func (l *RedisCluster) GroupAdd(ctx context.Context, group, channel string) error {
	return l.groupAdd(ctx, l, group, channel)
}

// GroupDiscard implements Layer, as Redis.GroupDiscard does.
func (l *RedisCluster) GroupDiscard(ctx context.Context, group, channel string) error {
	return l.groupDiscard(ctx, l, group, channel)
}

// subscribeLocked implements topics: a topic lives on the connection to
// the master serving its slot.
func (l *RedisCluster) subscribeLocked(topic string) { l.homeLocked(topic, true) }

func (l *RedisCluster) unsubscribeLocked(topic string) chan struct{} { return l.unhomeLocked(topic) }

func (l *RedisCluster) waitLocked(topic string) (live bool, fail chan struct{}, down bool) {
	if s := l.home[topic]; s != nil {
		return s.liveLocked(topic), s.fail, s.down
	}
	// No slot map yet, or the slot is unserved: wait for a read.
	l.pokeRefresh()
	return false, l.mapFail, l.mapDown
}

func (l *RedisCluster) blindLocked(topic string) bool {
	if s := l.home[topic]; s != nil {
		return s.blindLocked(topic)
	}
	return l.adrift[topic]
}

// GroupSend implements Layer: one script that SPUBLISHes on the group's
// shard, whatever the size of the group, applied once however often the
// client retries it (see Layer.KeyWindow). Its record is in the group's
// slot.
func (l *RedisCluster) GroupSend(ctx context.Context, group string, msg Message) (SendResult, error) {
	if err := l.check(ValidGroupName(group), msg); err != nil {
		return SendResult{}, err
	}
	topic := l.groupTopic + group
	if p, ok := historyFor(l.policies, group); ok {
		sent, ttl := l.sentKey("{"+topic+"}", "", msg)
		r, err := l.groupSendHistory(ctx, l.client, shardPublishing, sent, ttl, l.historyKey(group), group, msg, p)
		return r, l.follow(err)
	}
	if err := l.blindTo(l, group); err != nil {
		return SendResult{}, err
	}
	n, err := l.spublish(ctx, topic, "", msg.data, msg)
	r, err := l.groupSent("", n, err, group)
	return r, l.follow(err)
}

// spublish sends payload to topic through the recording script. While
// the cluster is down (cluster_state:fail, as for a moment after a node
// restarts, or before a failover), Redis refuses scripts but still takes
// SPUBLISH on a master that owns the slot
// (cluster-allow-pubsubshard-when-down): an unkeyed send then goes out as
// a plain SPUBLISH, which only the client's own retry could repeat, so
// that groups without history keep flowing. A keyed send fails instead,
// for its caller to retry with the same key.
func (l *RedisCluster) spublish(ctx context.Context, topic, dest string, payload []byte, msg Message) (int64, error) {
	sent, ttl := l.sentKey("{"+topic+"}", dest, msg)
	n, err := publish(ctx, l.client, shardPublishing.plain, sent, ttl, topic, payload)
	if err != nil && msg.key == "" && redis.IsClusterDownError(err) {
		return l.client.SPublish(ctx, topic, payload).Result()
	}
	return n, err
}

// GroupSendOnce implements Layer as Redis.GroupSendOnce does. The
// source's mark is kept per group, in the group's slot.
func (l *RedisCluster) GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg Message) (SendResult, error) {
	key, ttl := l.sentKey("{"+l.groupTopic+group+"}", "", msg)
	r, err := l.sendOnce(ctx, l.client, shardPublishing, key, ttl, l.historyKey(group), l.onceKey(source, group), source, seq, group, msg)
	return r, l.follow(err)
}

// LastSent implements Layer, reading the source's mark.
func (l *RedisCluster) LastSent(ctx context.Context, source, group string) (int64, bool, error) {
	if err := ValidGroupName(group); err != nil {
		return 0, false, err
	}
	return l.lastSent(ctx, l.client, source, l.onceKey(source, group))
}

// historyKey is the key of group's stream, "{<shard channel>}:history",
// and onceKey that of a source's mark: both in the channel's slot (names
// and the prefix cannot hold braces, so the channel is the whole hash
// tag).
func (l *RedisCluster) historyKey(group string) string {
	return "{" + l.groupTopic + group + "}:history"
}

func (l *RedisCluster) onceKey(source, group string) string {
	return "{" + l.groupTopic + group + "}:once:" + source
}

// History implements Layer, reading the group's stream from the
// master this instance follows the group on, the one its subscription
// just moved to when the layer recovers a group after a failover or a
// slot move: go-redis may still route the slot to the old master until
// its own slot map is read again. Without a local subscription, or if
// that master no longer answers for the slot, it reads through the
// cluster client.
func (l *RedisCluster) History(ctx context.Context, group, since string, limit int) ([]Message, error) {
	l.mu.Lock()
	s := l.home[l.groupTopic+group]
	l.mu.Unlock()
	if s != nil {
		msgs, err := l.readHistory(ctx, s.client, l.historyKey(group), group, since, limit)
		if !errors.Is(err, ErrUnavailable) {
			return msgs, err
		}
	}
	msgs, err := l.readHistory(ctx, l.client, l.historyKey(group), group, since, limit)
	return msgs, l.follow(err)
}

// recoverRead reads group's stream for recovery after pos, from the
// master the group's subscription just moved to, as History does.
func (l *RedisCluster) recoverRead(ctx context.Context, group string, pos position) ([]Message, bool, error) {
	l.mu.Lock()
	s := l.home[l.groupTopic+group]
	l.mu.Unlock()
	if s != nil {
		msgs, covered, err := l.readAfter(ctx, s.client, l.historyKey(group), group, pos)
		if !errors.Is(err, ErrUnavailable) {
			return msgs, covered, err
		}
	}
	msgs, covered, err := l.readAfter(ctx, l.client, l.historyKey(group), group, pos)
	return msgs, covered, l.follow(err)
}

// GroupSendLocal implements Layer without touching Redis, and so
// without a history id.
func (l *RedisCluster) GroupSendLocal(_ context.Context, group string, msg Message) (SendResult, error) {
	return SendLocal(&l.reg, group, msg, l.closed.Load())
}

// Check implements Layer: the slot map is known, every master answers
// a PING, and every subscription connection the layer needs is
// established. It answers within a second.
func (l *RedisCluster) Check(ctx context.Context) error {
	if l.closed.Load() {
		return ErrClosed
	}
	l.mu.Lock()
	known := l.owner != nil
	var down []string
	for addr, s := range l.shards {
		if len(s.want) > 0 && !s.up.Load() {
			down = append(down, addr)
		}
	}
	l.mu.Unlock()
	if !known {
		return fmt.Errorf("%w: Redis Cluster slot map not read yet", ErrUnavailable)
	}
	if err := bounded(ctx, l.pingMasters); err != nil {
		return unavailable(err)
	}
	if len(down) > 0 {
		return fmt.Errorf("%w: subscription connections to %s not established", ErrUnavailable, strings.Join(down, ", "))
	}
	return nil
}

// pingMasters pings every master of the cluster.
func (l *RedisCluster) pingMasters(ctx context.Context) error {
	return l.client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.Ping(ctx).Err()
	})
}

// Close implements Layer. It stops the layer's goroutines and closes its
// subscription connections, but not the client.
func (l *RedisCluster) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	close(l.closing)
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	shards, probes := l.shards, l.probes
	l.shards, l.probes = map[string]*subscriber{}, map[string]*redis.Client{}
	l.mu.Unlock()
	for _, s := range shards {
		s.stop()
	}
	for _, c := range probes {
		_ = c.Close()
	}
	return nil
}

// slotCount is the number of hash slots of a Redis Cluster.
const slotCount = 16384

// keySlot returns the cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag, modulo 16384. Herald's names cannot hold '{',
// so its channels never have a hash tag, but the rule is kept whole.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % slotCount
}
