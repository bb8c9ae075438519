package channellayer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The publishing scripts are built from the parts below. Every script
// first looks up the send's record (sentGuard): a send already applied,
// whether retried by go-redis after a read timeout or by its caller with
// the same idempotency key, publishes nothing again and returns what the
// first run did. The record is written (sentRecord) in the same script
// that publishes, so no send is applied twice, whatever the retries.
//
// Every script takes KEYS[1] the send's record and ARGV[1] its lifetime
// in ms, ARGV[2] the pub/sub channel and ARGV[3] the payload. A history
// script also takes KEYS[2] the stream, ARGV[4] its size and ARGV[5] its
// age in ms (0: none); a once script takes the source's mark as its last
// key, and the offer's seq and the mark's lifetime as its last two
// arguments. Each returns {id, receivers}, id "" for a group without
// history, with a third element 1 when the send had been applied before.

// sentGuard returns the recorded result of a send applied before.
const sentGuard = `
local sent = redis.call('GET', KEYS[1])
if sent then
  local sp = string.find(sent, ' ', 1, true)
  return {string.sub(sent, 1, sp - 1), tonumber(string.sub(sent, sp + 1)), 1}
end
`

// onceGuard stops the script for an offer already made (GroupSendOnce):
// it returns {"", -1}.
const onceGuard = `
local mark = KEYS[#KEYS]
local seq = tonumber(ARGV[#ARGV - 1])
local done = tonumber(redis.call('GET', mark) or '-1')
if seq <= done then return {'', -1} end
redis.call('SET', mark, ARGV[#ARGV - 1], 'PX', ARGV[#ARGV])
`

// historyBody keeps the message in its group's stream and publishes it
// with the stream id, in one step: ids are assigned once, where the
// message is published, and subscribers receive them in id order. Each
// entry also holds the id before it ("p"), so that a reader can tell
// whether anything between an id it knows and the oldest kept entry was
// trimmed away; the publication carries it too ("<id> <prev> <json>"),
// so that a subscriber can tell a message that follows the last one it
// delivered from one of another line of history (see dispatchGroup).
func historyBody(publish string) string {
	return `
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'p', prev, 'm', ARGV[3])
local age = tonumber(ARGV[5])
if age > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[2], 'MINID', '~', tostring(now - age))
  redis.call('PEXPIRE', KEYS[2], age)
end
local n = redis.call('` + publish + `', ARGV[2], id .. ' ' .. prev .. ' ' .. ARGV[3])
`
}

// plainBody publishes the payload as it is.
func plainBody(publish string) string {
	return `
local id = ''
local n = redis.call('` + publish + `', ARGV[2], ARGV[3])
`
}

const sentRecord = `
redis.call('SET', KEYS[1], id .. ' ' .. n, 'PX', ARGV[1])
return {id, n}
`

// publishing holds the scripts of one way to publish: PUBLISH on one
// Redis, SPUBLISH on a Redis Cluster, where every key a script touches is
// in the slot of the shard channel it publishes to.
type publishing struct {
	plain       *redis.Script
	history     *redis.Script
	once        *redis.Script
	historyOnce *redis.Script
}

func newPublishing(publish string) publishing {
	return publishing{
		plain:       redis.NewScript(sentGuard + plainBody(publish) + sentRecord),
		history:     redis.NewScript(sentGuard + historyBody(publish) + sentRecord),
		once:        redis.NewScript(sentGuard + onceGuard + plainBody(publish) + sentRecord),
		historyOnce: redis.NewScript(sentGuard + onceGuard + historyBody(publish) + sentRecord),
	}
}

var (
	plainPublishing = newPublishing("PUBLISH")
	shardPublishing = newPublishing("SPUBLISH")
)

// sentKey returns the key of a send's record, and how long it is kept.
// tag starts it (the destination's topic, or on a cluster the topic as
// hash tag, so that the record is in the destination's slot) and dest
// narrows it to one channel of an instance. A message with a key is
// recorded under that key for KeyWindow, so that a caller's retry is
// applied once; one without gets a key of its own, unique to this call,
// kept for retryWindow, long enough for the Redis client's own retries
// of the same call.
func (c *redisCore) sentKey(tag, dest string, msg Message) (string, int64) {
	if msg.key != "" {
		return tag + ":sent:" + dest + msg.key, KeyWindow.Milliseconds()
	}
	return tag + ":try:" + c.instance + "." + strconv.FormatUint(c.sendSeq.Add(1), 36), retryWindow.Milliseconds()
}

// retryWindow is how long the record of an unkeyed send is kept: longer
// than a Redis client retries one call (go-redis: 3 retries, each after
// at most a read timeout, 3s by default, and a backoff under 1s).
const retryWindow = time.Minute

// publish runs the script that sends payload to topic with no history,
// recorded under sent.
func publish(ctx context.Context, client redis.Cmdable, script *redis.Script, sent string, ttl int64, topic string, payload []byte) (int64, error) {
	_, n, err := scriptReply(script.Run(ctx, client, []string{sent}, ttl, topic, payload).Slice())
	return n, err
}

// groupSent turns the reply of a group's publishing script into the
// send's result, counting failures: receivers is how many instances got
// the message, and id the history id it got, "" for none.
func (c *redisCore) groupSent(id string, receivers int64, err error, group string) (SendResult, error) {
	if err != nil {
		c.publishErrors.Add(1)
		return SendResult{}, unavailable(err)
	}
	r := SendResult{ID: id, Delivered: receivers > 0}
	if !r.Delivered && !r.Kept() {
		return r, fmt.Errorf("%w: group %q has no member", ErrNoReceivers, group)
	}
	return r, nil
}

// onceTTL is how long a source's mark outlives its last send. Instances
// read a source within moments of each other, so a day is plenty; it only
// keeps marks of sources no longer used from staying for ever.
const onceTTL = 24 * time.Hour

// recoverTimeout bounds the history read that recovers a group after the
// subscription connection came back.
const recoverTimeout = 5 * time.Second

func (l *Redis) historyKey(group string) string { return l.keyPrefix + "history:" + group }

func (l *Redis) onceKey(source string) string { return l.keyPrefix + "once:" + source }

// groupSendHistory is GroupSend for a group that keeps history, in the
// stream at key, with the send's record at sent.
func (c *redisCore) groupSendHistory(ctx context.Context, client redis.Cmdable, pub publishing, sent string, ttl int64, key, group string, msg Message, p HistoryPolicy) (SendResult, error) {
	id, n, err := scriptReply(pub.history.Run(ctx, client, []string{sent, key},
		ttl, c.groupTopic+group, msg.data, p.Size, p.Age.Milliseconds()).Slice())
	return c.groupSent(id, n, err, group)
}

// GroupSendOnce implements Layer. The source's mark is checked and
// set in the same script that publishes, so of several instances offering
// the same seq exactly one sends it, and sends reach Redis in seq order.
func (l *Redis) GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg Message) (SendResult, error) {
	sent, ttl := l.sentKey(l.groupTopic+group, "", msg)
	return l.sendOnce(ctx, l.client, plainPublishing, sent, ttl, l.historyKey(group), l.onceKey(source), source, seq, group, msg)
}

// LastSent implements Layer, reading the source's mark.
func (l *Redis) LastSent(ctx context.Context, source, _ string) (int64, bool, error) {
	return l.lastSent(ctx, l.client, source, l.onceKey(source))
}

// sendOnce is GroupSendOnce for a layer that keeps group's stream at
// histKey, source's mark at mark and the send's record at sent.
func (c *redisCore) sendOnce(ctx context.Context, client redis.Cmdable, pub publishing, sent string, ttl int64, histKey, mark, source string, seq int64, group string, msg Message) (SendResult, error) {
	if err := c.check(ValidGroupName(group), msg); err != nil {
		return SendResult{}, err
	}
	if err := checkSource(source, seq); err != nil {
		return SendResult{}, err
	}
	var (
		id  string
		n   int64
		err error
	)
	if p, ok := historyFor(c.policies, group); ok {
		id, n, err = scriptReply(pub.historyOnce.Run(ctx, client, []string{sent, histKey, mark},
			ttl, c.groupTopic+group, msg.data, p.Size, p.Age.Milliseconds(), seq, onceTTL.Milliseconds()).Slice())
	} else {
		id, n, err = scriptReply(pub.once.Run(ctx, client, []string{sent, mark},
			ttl, c.groupTopic+group, msg.data, seq, onceTTL.Milliseconds()).Slice())
	}
	if err == nil && n < 0 {
		return SendResult{Skipped: true}, nil
	}
	return c.groupSent(id, n, err, group)
}

// lastSent is LastSent for a layer that keeps source's mark at mark.
func (c *redisCore) lastSent(ctx context.Context, client redis.Cmdable, source, mark string) (int64, bool, error) {
	if err := checkSource(source, 0); err != nil {
		return 0, false, err
	}
	seq, err := client.Get(ctx, mark).Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return 0, false, nil
	case err != nil:
		return 0, false, unavailable(err)
	}
	return seq, true, nil
}

// scriptReply reads the {id, receivers[, repeated]} reply of the
// publishing scripts.
func scriptReply(res []any, err error) (id string, receivers int64, _ error) {
	if err != nil {
		return "", 0, err
	}
	if len(res) < 2 {
		return "", 0, fmt.Errorf("unexpected script reply %v", res)
	}
	id, ok1 := res[0].(string)
	n, ok2 := res[1].(int64)
	if !ok1 || !ok2 {
		return "", 0, fmt.Errorf("unexpected script reply %v", res)
	}
	return id, n, nil
}

// hasHistory reports whether group keeps a history.
func (c *redisCore) hasHistory(group string) bool {
	_, ok := historyFor(c.policies, group)
	return ok
}

// History implements Layer, reading the group's Redis Stream.
func (l *Redis) History(ctx context.Context, group, since string, limit int) ([]Message, error) {
	return l.readHistory(ctx, l.client, l.historyKey(group), group, since, limit)
}

// readHistory is History for a layer that keeps group's stream at key,
// read through client.
func (c *redisCore) readHistory(ctx context.Context, client redis.Cmdable, key, group, since string, limit int) ([]Message, error) {
	if err := ValidGroupName(group); err != nil {
		return nil, err
	}
	policy, ok := historyFor(c.policies, group)
	if !ok {
		return nil, fmt.Errorf("%w: group %q", ErrNoHistory, group)
	}
	if _, err := ParseID(since); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHistoryGap, err)
	}
	pipe := client.Pipeline()
	after := pipe.XRangeN(ctx, key, "("+since, "+", int64(limit)+1)
	last := pipe.XRevRangeN(ctx, key, "+", "-", 1)
	var now *redis.TimeCmd
	if policy.Age > 0 {
		now = pipe.Time(ctx)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable(err)
	}
	entries := after.Val()
	if len(entries) == 0 {
		if l := last.Val(); len(l) == 1 && l[0].ID == since {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s is not the last id of group %q", ErrHistoryGap, since, group)
	}
	if p, _ := entries[0].Values["p"].(string); p != since {
		return nil, fmt.Errorf("%w: messages after %s of group %q are no longer kept", ErrHistoryGap, since, group)
	}
	if now != nil {
		// XTRIM MINID ~ trims whole nodes of the stream only, and the key
		// expires an age after the last send: an entry older than the age
		// may still be there. It counts as gone. Its id is the Redis time
		// it was added at, which TIME is read on.
		first, err := ParseID(entries[0].ID)
		cutoff := now.Val().UnixMilli() - policy.Age.Milliseconds()
		if err == nil && int64(first.MS) < cutoff {
			return nil, fmt.Errorf("%w: messages after %s of group %q are older than its history keeps", ErrHistoryGap, since, group)
		}
	}
	if len(entries) > limit {
		return nil, fmt.Errorf("%w: more than %d messages to replay", ErrHistoryGap, limit)
	}
	out := make([]Message, 0, len(entries))
	for _, e := range entries {
		raw, _ := e.Values["m"].(string)
		msg, err := ParseMessage([]byte(raw))
		if err != nil {
			return nil, fmt.Errorf("channellayer: history of group %q holds a malformed message %s: %w", group, e.ID, err)
		}
		out = append(out, MessageFromID(msg.typ, e.ID, FrameWithID(msg.data, e.ID, group)))
	}
	return out, nil
}

// readAfter reads the entries of group's stream at key that follow pos,
// for recovery, and reports whether they cover everything published
// after pos: the first of them follows pos directly (an exact pos), or
// follows an entry at or before it (a moment); with none, the stream
// still ends at pos (an exact pos), or nothing is known to be missing (a
// moment, whose group may never have had a message).
func (c *redisCore) readAfter(ctx context.Context, client redis.Cmdable, key, group string, pos position) ([]Message, bool, error) {
	pipe := client.Pipeline()
	after := pipe.XRangeN(ctx, key, "("+pos.id.String(), "+", recoverLimit+1)
	last := pipe.XRevRangeN(ctx, key, "+", "-", 1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, false, unavailable(err)
	}
	entries := after.Val()
	if len(entries) == 0 {
		l := last.Val()
		return nil, !pos.exact || (len(l) == 1 && l[0].ID == pos.id.String()), nil
	}
	covered := false
	if p, _ := entries[0].Values["p"].(string); p != "" {
		prev, err := ParseID(p)
		covered = err == nil && (prev == pos.id || !pos.exact && prev.Compare(pos.id) < 0)
	}
	if len(entries) > recoverLimit {
		entries, covered = entries[len(entries)-recoverLimit:], false
	}
	out := make([]Message, 0, len(entries))
	for _, e := range entries {
		raw, _ := e.Values["m"].(string)
		msg, err := ParseMessage([]byte(raw))
		if err != nil {
			c.log.Warn("channellayer: skipped a malformed message in a group's history", "group", group, "id", e.ID, "err", err)
			continue
		}
		out = append(out, MessageFromID(msg.typ, e.ID, FrameWithID(msg.data, e.ID, group)))
	}
	return out, covered, nil
}

// recoverLimit bounds the messages one recovery replays: more than any
// history keeps (MaxHistorySize, which Redis trims approximately).
const recoverLimit = 2 * MaxHistorySize

// dispatchGroup hands a group message from Redis to the local members.
// A payload that starts with a history id ("<id> <prev> <json>", or
// "<id> <json>" without the id before it) is delivered with it, once:
// ids at or before the last one delivered for the group were already
// delivered, by recovery or by an earlier copy.
//
// A message whose previous id is not the last one delivered does not
// follow what the members have: either messages were missed, or it comes
// from another line of history, as when a Redis Cluster master that was
// frozen and replaced continues and runs the sends queued on it before it
// steps down; it forwards their publications to its shard over the
// cluster bus, so they reach the new master's subscribers, though no
// history holds them and the sender's retry is applied again by the new
// master. Such a message is not delivered as it is: the group is
// recovered from its history on the connection it came from instead, so
// members get what the history holds after their position, or a resync.
func (c *redisCore) dispatchGroup(topic, payload string) {
	group := topic[len(c.groupTopic):]
	id, prev, body := "", "", payload
	if len(payload) > 0 && payload[0] != '{' {
		var ok bool
		id, body, ok = strings.Cut(payload, " ")
		if ok && len(body) > 0 && body[0] != '{' {
			prev, body, ok = strings.Cut(body, " ")
		}
		if !ok {
			c.log.Warn("channellayer: dropped a malformed group message from Redis", "topic", topic)
			return
		}
	}
	msg, err := ParseMessage([]byte(body))
	if err != nil {
		c.log.Warn("channellayer: dropped a malformed group message from Redis", "topic", topic, "err", err)
		return
	}
	if id == "" {
		c.reg.SendGroup(group, msg.typ, msg.data)
		return
	}
	pid, err := ParseID(id)
	var pprev ID
	if err == nil && prev != "" {
		pprev, err = ParseID(prev)
	}
	if err != nil {
		c.log.Warn("channellayer: dropped a group message with a malformed id from Redis", "topic", topic, "err", err)
		return
	}
	switch c.chain(group, pid, pprev, prev != "") {
	case chainRepeat:
		return
	case chainBroken:
		c.log.Warn("channellayer: a group message does not follow the last one delivered; recovering the group from its history", "group", group, "id", id, "prev", prev)
		c.recoverGroup(group)
		return
	}
	c.reg.SendGroupFrom(group, id, msg.typ, FrameWithID(msg.data, id, group))
}

// What chain found of a live message.
const (
	chainNext   = iota // it follows the position: deliver it
	chainRepeat        // at or before the position: delivered already
	chainBroken        // after the position, but not right after it
)

// chain records id as the last delivered for group if it comes right
// after the group's position: prev, when known, is the id before it in
// the history it was published from. A moment position takes any id.
func (c *redisCore) chain(group string, id, prev ID, chained bool) int {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	last, ok := c.seen[group]
	if ok && last.exact {
		if id.Compare(last.id) <= 0 {
			return chainRepeat
		}
		if chained && prev != last.id {
			return chainBroken
		}
	}
	if c.seen == nil {
		c.seen = make(map[string]position)
	}
	c.seen[group] = position{id: id, exact: true}
	return chainNext
}

// position is where a group's recovery starts: the last id delivered
// for it (exact), or, while it has delivered none, a moment shortly
// before its subscription was asked for, as a stream id of that moment.
type position struct {
	id    ID
	exact bool
}

// clockSlack is how far back a moment position reaches: stream ids come
// from Redis' clock, the moment from this instance's, so recovery reads
// from a little earlier to cover clocks that disagree by less than this.
const clockSlack = time.Second

// place gives group a moment position, if it has none: it is about
// to be subscribed, and what is published from now on must be
// recoverable, whether or not anything is delivered before a loss.
func (c *redisCore) place(group string) {
	if !c.hasHistory(group) {
		return
	}
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if _, ok := c.seen[group]; ok {
		return
	}
	if c.seen == nil {
		c.seen = make(map[string]position)
	}
	c.seen[group] = position{id: ID{MS: uint64(max(0, time.Now().Add(-clockSlack).UnixMilli()))}}
}

// advance records id as the last delivered for group, and reports false
// if it was not after the last one. A moment position takes any id: it
// says where recovery starts, not what was delivered.
func (c *redisCore) advance(group string, id ID) bool {
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if last, ok := c.seen[group]; ok && last.exact && id.Compare(last.id) <= 0 {
		return false
	}
	if c.seen == nil {
		c.seen = make(map[string]position)
	}
	c.seen[group] = position{id: id, exact: true}
	return true
}

func (c *redisCore) forgetSeen(group string) {
	c.seenMu.Lock()
	delete(c.seen, group)
	c.seenMu.Unlock()
}

// recoverGroup delivers to the local members of group what was published
// while it was not subscribed (the subscription connection was down, or
// on a cluster the group's slot moved), from the history, starting at
// the group's position. It runs on the subscription's reader before any
// later message of the group, so members get every message once and in
// order. When the history cannot cover the gap (trimmed, or lost with a
// Redis that restarted empty), members are told to resync first, then
// get what the history does hold after the position: messages accepted
// once Redis was back are not dropped by the resync.
func (c *redisCore) recoverGroup(group string) {
	c.seenMu.Lock()
	pos, ok := c.seen[group]
	c.seenMu.Unlock()
	if !ok || c.recoverRead == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recoverTimeout)
	defer cancel()
	msgs, covered, err := c.recoverRead(ctx, group, pos)
	if err != nil {
		c.log.Warn("channellayer: could not read a group's history after reconnecting; members must resync", "group", group, "err", err)
	} else if !covered {
		c.log.Warn("channellayer: a group's history no longer covers what its members missed; they must resync", "group", group, "since", pos.id.String())
	}
	if err != nil || !covered {
		c.resyncs.Add(1)
		c.reg.SendGroup(group, ResyncType, resyncFrame(group))
		if err == nil && pos.exact && len(msgs) == 0 {
			// The stream may start again lower (a Redis that restarted
			// with its clock behind): the next message sets the position.
			c.seenMu.Lock()
			if c.seen[group] == pos {
				c.seen[group] = position{id: pos.id}
			}
			c.seenMu.Unlock()
		}
	}
	n := 0
	for _, m := range msgs {
		pid, _ := ParseID(m.id)
		if c.advance(group, pid) {
			c.reg.SendGroupFrom(group, m.id, m.typ, m.data)
			n++
		}
	}
	c.recovered.Add(int64(n))
	if n > 0 {
		c.log.Info("channellayer: recovered messages missed while the group was not subscribed (connection lost or slot moved)", "group", group, "messages", n)
	}
}
