package channelsredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// ErrFull reports a send refused because the receiving inbox already
// holds its capacity of unread messages: the receiver is too slow, or
// gone and its messages not yet expired. channels_redis raises
// ChannelFull in the same case.
var ErrFull = fmt.Errorf("channelsredis: channel full (%w)", channellayer.ErrFull)

// Capacity sets the capacity of the channels whose names match Pattern,
// as an entry of channels_redis's channel_capacity.
type Capacity struct {
	// Pattern is a glob as in fnmatch: '*', '?' and '[...]'.
	Pattern string
	// Capacity is the number of messages the channel may hold.
	Capacity int
}

// CoreConfig configures a Core layer. The zero value works and matches
// channels_redis's defaults; each field names the channels_redis setting
// it must equal on the Django side.
type CoreConfig struct {
	// Prefix starts every Redis key ("prefix"). Default "asgi".
	Prefix string
	// Expiry is how long an unread message may wait in an inbox, in
	// whole seconds ("expiry"). Default 60s.
	Expiry time.Duration
	// GroupExpiry is how long a membership lasts unless refreshed, in
	// whole seconds ("group_expiry"). Herald refreshes the memberships of
	// its connections well within it. Default 24h.
	GroupExpiry time.Duration
	// Capacity is how many unread messages an inbox may hold before sends
	// to it fail with ErrFull ("capacity"). Default 100.
	Capacity int
	// ChannelCapacity overrides Capacity for channels matching a pattern;
	// the first match wins ("channel_capacity").
	ChannelCapacity []Capacity
	// SymmetricEncryptionKeys turns on Fernet encryption of every message
	// ("symmetric_encryption_keys"). The first key encrypts; all decrypt.
	SymmetricEncryptionKeys []string
	// Logger receives dropped messages and Redis errors. Default
	// slog.Default().
	Logger *slog.Logger
	// MaxBackoff caps the wait between attempts to read the inbox again
	// after Redis failed. Default 2s.
	MaxBackoff time.Duration
	// MaxGroups caps the distinct groups this instance holds at once
	// (those with a local member, each a sorted set refreshed on Redis): a
	// GroupAdd that would create one more fails with an error wrapping
	// groups.ErrGroupLimit. Sends are not limited. 0: no cap.
	MaxGroups int
}

// Core is a channellayer.Layer that speaks channels_redis's
// RedisChannelLayer format, so Django processes and Herald instances on
// one Redis share groups and can send to each other's channels.
//
// Each Core is one channels_redis "process": it owns the inbox
// <prefix>specific.<id>! and hands out channel names
// specific.<id>!<32 random hex>. One goroutine pops the inbox; a message names the
// channels it is for and is decoded once, whatever their number.
type Core struct {
	client  *redis.Client
	log     *slog.Logger
	crypt   *crypter
	prefix  string
	process string // "specific.<id>!", the non-local part of our names
	inbox   string // prefix + process
	wake    string // payload that wakes the reader at Close

	expiry, groupExpiry int64 // seconds
	capacity            int
	channelCapacity     []Capacity
	refreshEvery        time.Duration
	maxBackoff          time.Duration

	reg groups.Registry

	mu       sync.Mutex
	channels map[string]map[string]struct{} // local channel -> its groups

	scoreMu   sync.Mutex
	lastScore float64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

var _ channellayer.Layer = (*Core)(nil)

// NewCore returns a Core layer on client, which it does not close. It
// starts two goroutines, one popping the inbox and one refreshing group
// memberships; Close stops them. Redis need not be reachable yet.
func NewCore(client *redis.Client, cfg CoreConfig) (*Core, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "asgi"
	}
	if cfg.Expiry == 0 {
		cfg.Expiry = 60 * time.Second
	}
	if cfg.GroupExpiry == 0 {
		cfg.GroupExpiry = 24 * time.Hour
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 100
	}
	switch {
	case cfg.Expiry < time.Second:
		return nil, fmt.Errorf("channelsredis: expiry %v is under one second", cfg.Expiry)
	case cfg.GroupExpiry < time.Second:
		return nil, fmt.Errorf("channelsredis: group expiry %v is under one second", cfg.GroupExpiry)
	case cfg.Capacity < 0:
		return nil, fmt.Errorf("channelsredis: capacity %d is negative", cfg.Capacity)
	case strings.ContainsAny(cfg.Prefix, " \r\n"):
		return nil, fmt.Errorf("channelsredis: prefix %q holds white space", cfg.Prefix)
	}
	for _, c := range cfg.ChannelCapacity {
		if _, err := path.Match(c.Pattern, ""); err != nil || c.Capacity < 0 {
			return nil, fmt.Errorf("channelsredis: channel capacity %q: %d: bad pattern or negative capacity", c.Pattern, c.Capacity)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	expiry := int64(cfg.Expiry / time.Second)
	crypt, err := newCrypter(cfg.SymmetricEncryptionKeys, time.Duration(expiry+10)*time.Second)
	if err != nil {
		return nil, err
	}
	id := processID()
	l := &Core{
		client:          client,
		log:             cfg.Logger,
		crypt:           crypt,
		prefix:          cfg.Prefix,
		process:         "specific." + id + "!",
		wake:            "herald-wake-" + id,
		expiry:          expiry,
		groupExpiry:     int64(cfg.GroupExpiry / time.Second),
		capacity:        cfg.Capacity,
		channelCapacity: cfg.ChannelCapacity,
		// Refreshing four times per expiry, and at least every minute,
		// keeps members alive with margin and restores them soon after
		// Redis lost its data.
		refreshEvery: min(cfg.GroupExpiry/4, time.Minute),
		maxBackoff:   cfg.MaxBackoff,
		channels:     make(map[string]map[string]struct{}),
	}
	l.inbox = l.prefix + l.process
	l.reg.SetMaxGroups(cfg.MaxGroups)
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.read(ctx) }()
	go func() { defer l.wg.Done(); l.refresh(ctx) }()
	return l, nil
}

// processID is 32 hex digits, the shape of channels_redis's client
// prefix (a UUID4's hex).
func processID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// read pops the inbox until ctx ends. It is the only reader of the
// inbox and never waits on a member.
func (l *Core) read(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		res, err := l.client.BZPopMin(ctx, 2*time.Second, l.inbox).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("channelsredis: reading the inbox failed; retrying", "inbox", l.inbox, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, l.maxBackoff)
			continue
		}
		backoff = 50 * time.Millisecond
		l.dispatchMember(res.Member)
		// Drain what else is waiting in batches: one round trip per
		// message would let a burst fill the inbox to its capacity.
		for ctx.Err() == nil {
			batch, err := l.client.ZPopMin(ctx, l.inbox, popBatch).Result()
			if err != nil {
				break // the blocking pop above reports and backs off
			}
			for _, z := range batch {
				l.dispatchMember(z.Member)
			}
			if len(batch) < popBatch {
				break
			}
		}
	}
}

// popBatch is how many messages the reader takes from the inbox at once
// once it knows the inbox is not empty.
const popBatch = 128

func (l *Core) dispatchMember(member any) {
	payload, _ := member.(string)
	if payload == l.wake {
		return
	}
	l.dispatch([]byte(payload))
}

func (l *Core) dispatch(payload []byte) {
	channels, msg, err := l.decode(payload)
	if err != nil {
		l.log.Warn("channelsredis: dropped a message from the inbox", "inbox", l.inbox, "err", err)
		return
	}
	for _, ch := range channels {
		if !l.reg.SendChannel(ch, msg.Type(), msg.Bytes()) {
			l.log.Debug("channelsredis: message for a channel that is gone", "channel", ch)
		}
	}
}

// decode reads one inbox payload: 12 random bytes, then the msgpack map,
// sealed with Fernet when encryption is on.
func (l *Core) decode(payload []byte) ([]string, channellayer.Message, error) {
	if len(payload) < randomPrefixLen {
		return nil, channellayer.Message{}, fmt.Errorf("%w: %d bytes", errFormat, len(payload))
	}
	data := payload[randomPrefixLen:]
	if l.crypt != nil {
		var err error
		if data, err = l.crypt.open(data); err != nil {
			return nil, channellayer.Message{}, err
		}
	}
	return decodeMessage(data)
}

// randomPrefixLen is the length of the random bytes that start every
// core payload, so that equal messages stay distinct members of the
// inbox's sorted set.
const randomPrefixLen = 12

func (l *Core) encode(b body, channel any) string {
	data := b.frame(channel)
	if l.crypt != nil {
		data = l.crypt.seal(data)
	}
	out := make([]byte, randomPrefixLen, randomPrefixLen+len(data))
	_, _ = rand.Read(out)
	return string(append(out, data...))
}

// refresh re-adds every local membership with the current time, so that
// members never age out of a group while they are connected, and come
// back after Redis lost its data.
func (l *Core) refresh(ctx context.Context) {
	t := time.NewTicker(l.refreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.refreshOnce(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("channelsredis: refreshing group memberships failed; will retry", "err", err)
		}
	}
}

func (l *Core) refreshOnce(ctx context.Context) error {
	byGroup := map[string][]string{}
	l.mu.Lock()
	for ch, gs := range l.channels {
		for g := range gs {
			byGroup[g] = append(byGroup[g], ch)
		}
	}
	l.mu.Unlock()
	if len(byGroup) == 0 {
		return nil
	}
	now := float64(time.Now().UnixNano()) / 1e9
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for g, chans := range byGroup {
			zs := make([]redis.Z, len(chans))
			for i, ch := range chans {
				zs[i] = redis.Z{Score: now, Member: ch}
			}
			p.ZAdd(ctx, l.groupKey(g), zs...)
			p.Expire(ctx, l.groupKey(g), time.Duration(l.groupExpiry)*time.Second)
		}
		return nil
	})
	return err
}

func (l *Core) groupKey(group string) string { return l.prefix + ":group:" + group }

// NewChannel implements channellayer.Layer. Names look like
// "specific.<32 hex>!<32 random hex>", as channels_redis's, so Django code can send
// to them.
func (l *Core) NewChannel(m groups.Member) (string, error) {
	if l.closed.Load() {
		return "", channellayer.ErrClosed
	}
	name := l.process + channellayer.LocalName()
	l.mu.Lock()
	l.channels[name] = map[string]struct{}{}
	l.mu.Unlock()
	l.reg.AddChannel(name, m)
	return name, nil
}

// CloseChannel implements channellayer.Layer.
func (l *Core) CloseChannel(ctx context.Context, channel string) error {
	l.mu.Lock()
	gs := l.channels[channel]
	delete(l.channels, channel)
	l.mu.Unlock()
	l.reg.RemoveChannel(channel)
	if len(gs) == 0 {
		return nil
	}
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for g := range gs {
			p.ZRem(ctx, l.groupKey(g), channel)
		}
		return nil
	})
	return unavailable(err)
}

// Send implements channellayer.Layer. A send to a channel of another
// process is queued in that process's inbox: no channels_redis process
// can be asked whether it is alive, so the send succeeds while the inbox
// has room and the message expires unread if nobody pops it. Names that
// no channels_redis or Herald process can have made (a "!" not preceded
// by 32 hex digits) fail with ErrNoReceivers, as do this instance's
// channels that are closed.
func (l *Core) Send(ctx context.Context, channel string, msg channellayer.Message) error {
	if err := l.check(channellayer.ValidChannelName(channel), msg); err != nil {
		return err
	}
	key, payloadChannel := l.prefix+channel, any(nil)
	if i := strings.IndexByte(channel, '!'); i >= 0 {
		process := channel[:i+1]
		if process == l.process {
			l.mu.Lock()
			_, ok := l.channels[channel]
			l.mu.Unlock()
			if !ok {
				return fmt.Errorf("%w: no channel %q", channellayer.ErrNoReceivers, channel)
			}
		} else if !madeByProcess(process) {
			return fmt.Errorf("%w: no channel %q (no channels_redis process names its channels so)", channellayer.ErrNoReceivers, channel)
		}
		key, payloadChannel = l.prefix+process, channel
	}
	b, err := encodeBody(msg)
	if err != nil {
		return err
	}
	res, err := pushScript.Run(ctx, l.client, []string{key},
		l.encode(b, payloadChannel), l.capacityOf(channel), l.score(), l.expiry).Int()
	if err != nil {
		return unavailable(err)
	}
	if res != 0 {
		return fmt.Errorf("%w: %q holds %d messages", ErrFull, channel, l.capacityOf(channel))
	}
	return nil
}

// madeByProcess reports whether process (a channel name up to and
// including its '!') ends in 32 hex digits, as every name a
// channels_redis or Herald process hands out does.
func madeByProcess(process string) bool {
	id := strings.TrimSuffix(process, "!")
	if len(id) < 32 {
		return false
	}
	if len(id) > 32 && id[len(id)-33] != '.' {
		return false
	}
	_, err := hex.DecodeString(id[len(id)-32:])
	return err == nil
}

func (l *Core) capacityOf(channel string) int {
	for _, c := range l.channelCapacity {
		if ok, _ := path.Match(c.Pattern, channel); ok {
			return c.Capacity
		}
	}
	return l.capacity
}

// score returns the current time in seconds, strictly above the last
// score this layer used, so that one sender's messages to one inbox pop
// in the order they were sent.
func (l *Core) score() float64 {
	now := float64(time.Now().UnixNano()) / 1e9
	l.scoreMu.Lock()
	defer l.scoreMu.Unlock()
	if now <= l.lastScore {
		now = math.Nextafter(l.lastScore, math.Inf(1))
	}
	l.lastScore = now
	return now
}

// pushScript drops expired messages from each inbox KEYS[i], then adds
// ARGV[i] scored by the send time unless the inbox is at its capacity
// ARGV[n+i], and returns how many inboxes were full. The last two ARGV
// are the send time and the expiry in seconds. It is channels_redis's
// group send, expiry sweep included, in one round trip.
var pushScript = redis.NewScript(`
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = tonumber(ARGV[2 * n + 2])
local full = 0
for i = 1, n do
	redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(tonumber(now)) - expiry)
	if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
		redis.call('ZADD', KEYS[i], now, ARGV[i])
		redis.call('EXPIRE', KEYS[i], expiry)
	else
		full = full + 1
	end
end
return full
`)

// GroupAdd implements channellayer.Layer: the channel joins the group's
// sorted set, scored by the time, where Django sees it as a member. The
// membership is refreshed while the channel lives. If Redis cannot be
// reached the membership still stands, is written by the next refresh,
// and GroupAdd returns an error wrapping channellayer.ErrUnavailable.
func (l *Core) GroupAdd(ctx context.Context, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	if l.closed.Load() {
		return channellayer.ErrClosed
	}
	l.mu.Lock()
	gs, ok := l.channels[channel]
	if ok {
		gs[group] = struct{}{}
	}
	l.mu.Unlock()
	if !ok {
		return fmt.Errorf("channelsredis: group add: %w %q", groups.ErrUnknownChannel, channel)
	}
	if _, err := l.reg.Join(group, channel); err != nil {
		l.mu.Lock()
		if gs, ok := l.channels[channel]; ok {
			delete(gs, group) // not a member: nothing to refresh or remove
		}
		l.mu.Unlock()
		return err
	}
	key := l.groupKey(group)
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, key, redis.Z{Score: float64(time.Now().UnixNano()) / 1e9, Member: channel})
		p.Expire(ctx, key, time.Duration(l.groupExpiry)*time.Second)
		return nil
	})
	return unavailable(err)
}

// GroupDiscard implements channellayer.Layer.
func (l *Core) GroupDiscard(ctx context.Context, group, channel string) error {
	if err := checkNames(group, channel); err != nil {
		return err
	}
	l.mu.Lock()
	if gs, ok := l.channels[channel]; ok {
		delete(gs, group)
	}
	l.mu.Unlock()
	l.reg.Leave(group, channel)
	if l.closed.Load() {
		return nil
	}
	return unavailable(l.client.ZRem(ctx, l.groupKey(group), channel).Err())
}

// GroupSend implements channellayer.Layer as channels_redis does: it
// drops members older than the group expiry, reads the rest, and queues
// one copy of the message per inbox, naming that inbox's members in it.
// Inboxes at capacity are skipped; the send fails with ErrFull only if
// every inbox was full.
func (l *Core) GroupSend(ctx context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	if err := l.check(channellayer.ValidGroupName(group), msg); err != nil {
		return channellayer.SendResult{}, err
	}
	b, err := encodeBody(msg)
	if err != nil {
		return channellayer.SendResult{}, err
	}
	key := l.groupKey(group)
	var members *redis.StringSliceCmd
	_, err = l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, key, "0", strconv.FormatInt(time.Now().Unix()-l.groupExpiry, 10))
		members = p.ZRange(ctx, key, 0, -1)
		return nil
	})
	if err != nil {
		return channellayer.SendResult{}, unavailable(err)
	}
	names := members.Val()
	if len(names) == 0 {
		return channellayer.SendResult{}, fmt.Errorf("%w: group %q has no member", channellayer.ErrNoReceivers, group)
	}
	var keys []string
	byKey := map[string][]string{}
	for _, ch := range names {
		k := l.prefix + ch
		if i := strings.IndexByte(ch, '!'); i >= 0 {
			k = l.prefix + ch[:i+1]
		}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], ch)
	}
	args := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		args = append(args, l.encode(b, byKey[k]))
	}
	for _, k := range keys {
		args = append(args, l.capacityOf(byKey[k][0]))
	}
	args = append(args, l.score(), l.expiry)
	full, err := pushScript.Run(ctx, l.client, keys, args...).Int()
	if err != nil {
		return channellayer.SendResult{}, unavailable(err)
	}
	if full == len(keys) {
		return channellayer.SendResult{}, fmt.Errorf("%w: every inbox of group %q is at capacity", ErrFull, group)
	}
	if full > 0 {
		l.log.Info("channelsredis: group send skipped inboxes at capacity", "group", group, "full", full, "inboxes", len(keys))
	}
	return channellayer.SendResult{Delivered: true}, nil
}

// GroupSendLocal implements channellayer.Layer without touching Redis.
func (l *Core) GroupSendLocal(_ context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendLocal(&l.reg, group, msg, l.closed.Load())
}

// Check implements channellayer.Layer.
func (l *Core) Check(ctx context.Context) error {
	if l.closed.Load() {
		return channellayer.ErrClosed
	}
	return unavailable(l.client.Ping(ctx).Err())
}

// Close implements channellayer.Layer. It removes this instance's
// channels from their groups, so Django stops queueing messages for
// them, and stops the goroutines. It does not close the client.
func (l *Core) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.mu.Lock()
	chans := l.channels
	l.channels = map[string]map[string]struct{}{}
	l.mu.Unlock()
	l.cancel()
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for ch, gs := range chans {
			for g := range gs {
				p.ZRem(ctx, l.groupKey(g), ch)
			}
		}
		// Wake the reader from its blocking pop.
		p.ZAdd(ctx, l.inbox, redis.Z{Score: 0, Member: l.wake})
		p.Expire(ctx, l.inbox, time.Duration(l.expiry)*time.Second)
		return nil
	})
	l.wg.Wait()
	// The reader may have stopped before popping the wake-up.
	l.client.ZRem(ctx, l.inbox, l.wake)
	return unavailable(err)
}

func (l *Core) check(nameErr error, msg channellayer.Message) error {
	return channellayer.CheckSend(nameErr, msg, l.closed.Load())
}

func checkNames(group, channel string) error {
	if err := channellayer.ValidGroupName(group); err != nil {
		return err
	}
	return channellayer.ValidChannelName(channel)
}

// unavailable wraps a Redis error in channellayer.ErrUnavailable.
func unavailable(err error) error {
	if err == nil || errors.Is(err, channellayer.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", channellayer.ErrUnavailable, err)
}
