package groups

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrUnknownChannel is returned by Join when the channel has no local
// Member registered.
var ErrUnknownChannel = errors.New("groups: unknown channel")

// ErrGroupLimit is returned by Join when the group has no local member
// yet and the registry already holds as many groups as SetMaxGroups
// allows: joining would create one group too many on this instance.
var ErrGroupLimit = errors.New("groups: too many groups on this instance")

// Member is the receiving end of a local channel, usually a connection.
type Member interface {
	// Deliver queues one message for the member. data is the encoded JSON
	// object, shared with every other recipient, and must not be modified.
	// Deliver must not block.
	Deliver(msgType string, data []byte)
}

// HistoryMember is a Member that also learns which group a message was
// sent to and its history id, for groups that keep a history. Members
// that implement it receive group messages through DeliverFrom only.
type HistoryMember interface {
	Member
	// DeliverFrom queues one message sent to group. id is its history
	// id, or "" if the group keeps none. Like Deliver, it must not block.
	DeliverFrom(group, id, msgType string, data []byte)
}

// MemberFunc adapts a function to the Member interface.
type MemberFunc func(msgType string, data []byte)

// Deliver calls f(msgType, data).
func (f MemberFunc) Deliver(msgType string, data []byte) { f(msgType, data) }

type channel struct {
	member Member
	groups []string // few: a connection is in a handful of groups, and a map would cost hundreds of bytes per channel
}

func (ch *channel) in(group string) bool { return slices.Contains(ch.groups, group) }

// Registry is the local membership of one instance. The zero value is
// ready to use.
type Registry struct {
	mu        sync.RWMutex
	channels  map[string]*channel
	groups    map[string]*groupMembers
	maxGroups int // 0: no limit
}

// SetMaxGroups caps the groups the registry holds at once (those with at
// least one local member): past n, Join refuses a channel that would be
// the first member of a group with an error wrapping ErrGroupLimit.
// Joining a group that has local members is never refused. Zero or less
// removes the cap. Every shared layer subscribes to each local group on
// its backing service, so the cap also bounds those subscriptions.
func (r *Registry) SetMaxGroups(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxGroups = max(n, 0)
}

type groupMembers struct {
	members []Member
	names   []string       // names[i] is the channel of members[i]
	pos     map[string]int // channel name -> index in members
}

// AddChannel registers m as the receiver of the local channel name. It
// replaces any member already registered under that name.
func (r *Registry) AddChannel(name string, m Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.channels == nil {
		r.channels = make(map[string]*channel)
		r.groups = make(map[string]*groupMembers)
	}
	if old, ok := r.channels[name]; ok {
		old.member = m
		for _, name2 := range old.groups {
			g := r.groups[name2]
			g.members[g.pos[name]] = m
		}
		return
	}
	r.channels[name] = &channel{member: m}
}

// RemoveChannel forgets the channel and removes it from every group it
// belonged to. It returns the groups left with no local member, in no
// particular order.
func (r *Registry) RemoveChannel(name string) (emptied []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.channels[name]
	if !ok {
		return nil
	}
	joined := ch.groups
	ch.groups = nil // leaveLocked need not remove them one by one
	for _, g := range joined {
		if r.leaveLocked(g, name) {
			emptied = append(emptied, g)
		}
	}
	delete(r.channels, name)
	return emptied
}

// Join adds the local channel to group. first reports whether the channel
// is the group's first local member. Joining twice is a no-op. A join
// that would create a group past SetMaxGroups' cap fails with
// ErrGroupLimit.
func (r *Registry) Join(group, channelName string) (first bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.channels[channelName]
	if !ok {
		return false, fmt.Errorf("%w %q", ErrUnknownChannel, channelName)
	}
	if ch.in(group) {
		return false, nil
	}
	g := r.groups[group]
	if g == nil && r.maxGroups > 0 && len(r.groups) >= r.maxGroups {
		return false, fmt.Errorf("%w: group %q has no member here yet and this instance already holds %d groups, its limit; try again later or on another instance",
			ErrGroupLimit, group, len(r.groups))
	}
	ch.groups = append(ch.groups, group)
	if g == nil {
		g = &groupMembers{pos: make(map[string]int, 1)}
		r.groups[group] = g
	}
	n := len(g.members)
	g.members = append(g.members, ch.member)
	g.names = append(g.names, channelName)
	g.pos[channelName] = n
	return n == 0, nil
}

// Leave removes the local channel from group. last reports whether the
// group has no local member left because of this call.
func (r *Registry) Leave(group, channelName string) (last bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.channels[channelName]
	if !ok {
		return false
	}
	if !ch.in(group) {
		return false
	}
	return r.leaveLocked(group, channelName)
}

func (r *Registry) leaveLocked(name, channelName string) bool {
	ch := r.channels[channelName]
	if i := slices.Index(ch.groups, name); i >= 0 {
		ch.groups = slices.Delete(ch.groups, i, i+1)
	}
	g := r.groups[name]
	last := len(g.members) - 1
	if last == 0 {
		delete(r.groups, name)
		return true
	}
	pos := g.pos[channelName]
	delete(g.pos, channelName)
	// Move the last member into the hole. Fan-out holds the read lock
	// while it iterates, so changing the slice in place is safe, and a
	// join or leave costs O(1) however large the group.
	if pos != last {
		g.members[pos] = g.members[last]
		g.names[pos] = g.names[last]
		g.pos[g.names[pos]] = pos
	}
	g.members[last] = nil
	g.members = g.members[:last]
	g.names = g.names[:last]
	return false
}

// SendGroup delivers the message to every local member of group and
// returns how many there were.
func (r *Registry) SendGroup(group, msgType string, data []byte) int {
	return r.SendGroupFrom(group, "", msgType, data)
}

// SendGroupFrom is SendGroup for a message with the history id id ("" for
// none): members that implement HistoryMember get the group and the id.
func (r *Registry) SendGroupFrom(group, id, msgType string, data []byte) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	g := r.groups[group]
	if g == nil {
		return 0
	}
	for _, m := range g.members {
		if hm, ok := m.(HistoryMember); ok {
			hm.DeliverFrom(group, id, msgType, data)
		} else {
			m.Deliver(msgType, data)
		}
	}
	return len(g.members)
}

// SendChannel delivers the message to the local channel and reports
// whether it exists.
func (r *Registry) SendChannel(name, msgType string, data []byte) bool {
	r.mu.RLock()
	ch, ok := r.channels[name]
	var m Member
	if ok {
		m = ch.member
	}
	r.mu.RUnlock()
	if !ok {
		return false
	}
	m.Deliver(msgType, data)
	return true
}

// Groups returns the names of the groups that have at least one local
// member.
func (r *Registry) Groups() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.groups))
	for g := range r.groups {
		names = append(names, g)
	}
	return names
}

// Len returns the number of local members of group.
func (r *Registry) Len(group string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if g := r.groups[group]; g != nil {
		return len(g.members)
	}
	return 0
}

// Channels returns the number of registered local channels.
func (r *Registry) Channels() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.channels)
}

// Stats counts a registry's contents.
type Stats struct {
	Channels int // local channels
	Groups   int // groups with at least one local member
	Members  int // memberships: one channel in three groups counts three
}

// Stats returns the registry's current counts.
func (r *Registry) Stats() Stats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := Stats{Channels: len(r.channels), Groups: len(r.groups)}
	for _, g := range r.groups {
		st.Members += len(g.members)
	}
	return st
}
