package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer/keyrate"
)

// Resync is the frame a client receives when it asked to resume a group
// and what it missed can no longer be replayed: older than the group's
// history, more than Server.MaxReplay messages or Server.MaxReplayBytes
// bytes, unknown to the history, or lost while the instance's link to the
// layer was down. The live stream follows; the client should reload its
// state of Group, the group it names.
type Resync struct {
	Type  string `json:"type"` // "resync"
	Group string `json:"group,omitempty"`
}

func resyncFrame(group string) []byte {
	b, _ := json.Marshal(Resync{Type: "resync", Group: group})
	return b
}

// JoinFrom joins group and resumes it from since, the history id of the
// last message of the group the client saw: the client receives every
// message published after it, in order, then the live stream, with no
// gap and no duplicate between the two. When that is impossible it
// receives a Resync frame before the live stream instead. Join's rules
// and errors apply.
func (c *Conn) JoinFrom(ctx context.Context, group, since string) error {
	if err := channellayer.ValidGroupName(group); err != nil {
		return err
	}
	if !c.MayJoin(group) {
		return fmt.Errorf("%w: %q", ErrForbiddenGroup, group)
	}
	c.hold(group)
	err := c.Join(ctx, group)
	if err != nil && !errors.Is(err, channellayer.ErrUnavailable) {
		c.release(group, since, nil, err)
		return err
	}
	c.seed(group, since)
	c.Resume(ctx, group, since)
	return err
}

// seed records where the client resumes group from, before the
// transport starts, as the start of an event stream's position vector.
func (c *Conn) seed(group, since string) {
	if _, err := channellayer.ParseID(since); err != nil {
		return // it resyncs: no position to keep
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	for i, p := range c.seeds {
		if p.group == group {
			c.seeds[i].id = since
			return
		}
	}
	c.seeds = append(c.seeds, position{group: group, id: since})
}

// remember keeps positions for groups the client may subscribe to
// later, def being the group a position without one is for.
func (c *Conn) remember(def string, ps []position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.def, c.remembered = def, ps
}

// defaultGroup returns the group a bare position stands for.
func (c *Conn) defaultGroup() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.def
}

// rememberedSince returns, once, the position the client gave at connect
// for group.
func (c *Conn) rememberedSince(group string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.remembered {
		if p.group == group || (p.group == "" && group == c.def) {
			c.remembered = slices.Delete(c.remembered, i, i+1)
			return p.id, true
		}
	}
	return "", false
}

// Resume replays to the client the messages of group, which it has
// joined, published after since, as JoinFrom does. If messages of the
// group were already written to the client on this connection, only a
// replay that needs nothing older than them is possible; otherwise the
// client gets a Resync frame.
func (c *Conn) Resume(ctx context.Context, group, since string) {
	c.hold(group)
	// A group without history answers ErrNoHistory: the client resyncs.
	msgs, err := c.layer.History(ctx, group, since, c.srv.maxReplay())
	if err != nil {
		c.Logger().Debug("consumer: cannot resume; client must resync", "group", group, "err", err)
	}
	c.release(group, since, msgs, err)
}

// ErrReplayRateLimited is returned by Conn.AllowReplay for a client
// address over Server.ReplayRate.
var ErrReplayRateLimited = errors.New("consumer: too many replays asked for from this address")

// AllowReplay takes one replay from the bucket of the connection's
// client address (Server.ReplayRate). Consumers call it before a Resume
// or JoinFrom that a client frame asks for; the replays of the request's
// own resume positions were counted when it connected. Over the limit it
// returns an error wrapping ErrReplayRateLimited that says when to retry,
// and the number of seconds.
func (c *Conn) AllowReplay() (int, error) {
	ok, wait := c.srv.allowReplay(c.addr)
	if ok {
		return 0, nil
	}
	s := keyrate.RetryAfter(wait)
	return s, fmt.Errorf("%w; retry in %d s", ErrReplayRateLimited, s)
}

// hold makes live messages of group wait aside, with those already
// queued, until release.
func (c *Conn) hold(group string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if _, ok := c.held[group]; ok {
		return
	}
	if c.held == nil {
		c.held = make(map[string][]item, 1)
	}
	h := make([]item, 0, 4)
	kept := c.queue[:0:0]
	for _, it := range c.queue {
		if it.group == group && it.msgType != "" {
			h = append(h, it)
		} else {
			kept = append(kept, it)
		}
	}
	if len(h) > 0 {
		c.queue = kept
	}
	c.held[group] = h
}

// release queues the replay (or a Resync frame when err is not nil),
// then the held live messages that the replay did not already cover.
func (c *Conn) release(group, since string, replay []channellayer.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.held[group]
	delete(c.held, group)
	if c.closing {
		return
	}
	resync := err != nil
	last, perr := channellayer.ParseID(since)
	if perr != nil && !resync {
		resync = true
	}
	if first, ok := c.flowed[group]; ok && !resync {
		// Live messages of the group already reached the client: anything
		// older cannot be put before them.
		fid, _ := channellayer.ParseID(first)
		for _, m := range replay {
			if id, _ := channellayer.ParseID(m.ID()); id.Compare(fid) < 0 {
				resync = true
				break
			}
		}
		replay = nil
	}
	// The replay does not count against the queue bound (see account):
	// it is bounded by Server.MaxReplay and Server.MaxReplayBytes instead.
	if !resync && len(replay) > 0 {
		size := 0
		for _, m := range replay {
			size += len(m.Bytes()) + itemOverhead
		}
		if c.exempt+size > c.srv.maxReplayBytes() {
			c.srv.replayLarge.Add(1)
			c.Logger().Debug("consumer: replay too large; client must resync", "group", group,
				"messages", len(replay), "bytes", size, "unwritten_replay", c.exempt, "limit", c.srv.maxReplayBytes())
			resync = true
		}
	}
	before := c.queued
	if resync {
		it := item{data: resyncFrame(group)}
		c.queue = append(c.queue, it)
		c.queued += it.cost()
	} else {
		for _, m := range replay {
			it := item{msgType: m.Type(), group: group, id: m.ID(), data: m.Bytes()}
			c.queue = append(c.queue, it)
			c.queued += it.cost()
			if id, err := channellayer.ParseID(m.ID()); err == nil {
				last = id
			}
		}
	}
	c.exempt += c.queued - before
	if resync {
		delete(c.floor, group)
	} else {
		if c.floor == nil {
			c.floor = make(map[string]channellayer.ID, 1)
		}
		c.floor[group] = last
	}
	for _, it := range held {
		if !resync && it.id != "" {
			if id, err := channellayer.ParseID(it.id); err == nil && id.Compare(last) <= 0 {
				c.account(-it.cost())
				continue // replayed already
			}
		}
		c.queue = append(c.queue, it)
	}
	c.kick()
}
