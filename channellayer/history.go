package channellayer

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// ErrHistoryGap reports that a history cannot say what was published
// after an id: the messages that followed it are no longer kept (trimmed
// by size or age, or lost with the layer's storage), the id was never
// handed out by this history, or more messages followed it than the
// caller would replay. A client told of a gap must reload its state.
var ErrHistoryGap = errors.New("channellayer: history does not reach back to the id")

// ErrNoHistory reports a History call for a group that keeps no
// history: its policy keeps none, or the layer keeps no history at all.
// Unlike ErrHistoryGap it says nothing about since: no id of the group
// can be resumed. A message sent to a group with history gets an id,
// assigned once where it is published, that increases within the group;
// its members receive it with the id (see groups.HistoryMember and
// FrameWithID).
var ErrNoHistory = errors.New("channellayer: group keeps no history")

// HistoryPolicy says how much history the groups whose names match
// Pattern keep: at most about Size messages, none older than Age. Both
// bounds apply; a zero Age keeps messages until Size pushes them out.
type HistoryPolicy struct {
	Pattern string        // path.Match pattern of group names, such as "orders.*"
	Size    int           // messages kept; 0 turns history off for the pattern
	Age     time.Duration // oldest message kept; 0: no age limit
}

// DefaultHistory is the policy of a layer configured with none: the
// group of the demo page, gossip, keeps its last 1000 messages for an
// hour.
var DefaultHistory = []HistoryPolicy{{Pattern: "gossip", Size: 1000, Age: time.Hour}}

// MaxHistorySize bounds HistoryPolicy.Size.
const MaxHistorySize = 1_000_000

// ParseHistory reads policies written as "pattern:size[:age]", separated
// by commas, such as "gossip:1000:1h,orders.*:100:10m". The first pattern
// that matches a group decides; "gossip:0" turns the default off. An
// empty string means no history at all.
func ParseHistory(s string) ([]HistoryPolicy, error) {
	policies := []HistoryPolicy{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		fields := strings.Split(part, ":")
		if len(fields) < 2 || len(fields) > 3 {
			return nil, fmt.Errorf("channellayer: history %q: want pattern:size[:age]", part)
		}
		p := HistoryPolicy{Pattern: fields[0]}
		if _, err := path.Match(p.Pattern, "x"); err != nil || p.Pattern == "" {
			return nil, fmt.Errorf("channellayer: history %q: bad pattern", part)
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil || n < 0 || n > MaxHistorySize {
			return nil, fmt.Errorf("channellayer: history %q: size must be a number from 0 to %d", part, MaxHistorySize)
		}
		p.Size = n
		if len(fields) == 3 {
			d, err := time.ParseDuration(fields[2])
			if err != nil || d < 0 || (d > 0 && d < time.Millisecond) {
				return nil, fmt.Errorf("channellayer: history %q: age must be a duration such as 10m", part)
			}
			p.Age = d
		}
		policies = append(policies, p)
	}
	return policies, nil
}

// historyFor returns the policy that covers group, if it keeps history.
func historyFor(policies []HistoryPolicy, group string) (HistoryPolicy, bool) {
	for _, p := range policies {
		if ok, _ := path.Match(p.Pattern, group); ok {
			return p, p.Size > 0
		}
	}
	return HistoryPolicy{}, false
}

func checkPolicies(policies []HistoryPolicy) ([]HistoryPolicy, error) {
	if policies == nil {
		return DefaultHistory, nil
	}
	for _, p := range policies {
		if _, err := path.Match(p.Pattern, "x"); err != nil || p.Pattern == "" {
			return nil, fmt.Errorf("channellayer: history pattern %q is not valid", p.Pattern)
		}
		if p.Size < 0 || p.Size > MaxHistorySize || p.Age < 0 {
			return nil, fmt.Errorf("channellayer: history %q: size or age out of range", p.Pattern)
		}
	}
	return policies, nil
}

// ID is a history id, "<ms>-<seq>" as Redis Stream ids are written: the
// millisecond it was assigned, then a counter within that millisecond.
// Ids of one group increase; clients treat them as opaque strings.
type ID struct {
	MS, Seq uint64
}

// ParseID reads an id as written by ID.String. It accepts nothing else:
// no spaces, signs, leading '+' or missing parts.
func ParseID(s string) (ID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || len(s) > 41 {
		return ID{}, fmt.Errorf("channellayer: bad history id %q", truncate(s))
	}
	a, err1 := parseDigits(ms)
	b, err2 := parseDigits(seq)
	if err1 != nil || err2 != nil {
		return ID{}, fmt.Errorf("channellayer: bad history id %q", truncate(s))
	}
	return ID{MS: a, Seq: b}, nil
}

func parseDigits(s string) (uint64, error) {
	if s == "" || len(s) > 20 {
		return 0, errors.New("bad")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("bad")
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// String returns "<ms>-<seq>".
func (id ID) String() string {
	return strconv.FormatUint(id.MS, 10) + "-" + strconv.FormatUint(id.Seq, 10)
}

// Compare returns -1, 0 or +1 as id is before, equal to or after o.
func (id ID) Compare(o ID) int {
	switch {
	case id.MS < o.MS:
		return -1
	case id.MS > o.MS:
		return 1
	case id.Seq < o.Seq:
		return -1
	case id.Seq > o.Seq:
		return 1
	}
	return 0
}

// IDField is the top-level field that carries a message's history id in
// the frames members receive, and GroupField the one that names the
// group the id belongs to, so that a client in several groups can keep
// one resume position per group. Publishers must not use them.
const (
	IDField    = "herald_id"
	GroupField = "herald_group"
)

// FrameWithID returns the encoded object msg with
// `"herald_id":"<id>","herald_group":"<group>"` appended as its last
// fields. The message's own fields are untouched. Group names and ids
// hold nothing JSON must escape.
func FrameWithID(msg []byte, id, group string) []byte {
	// msg is a trimmed JSON object with at least "type", so it ends in
	// '}' and is not empty.
	b := make([]byte, 0, len(msg)+len(IDField)+len(id)+len(GroupField)+len(group)+12)
	b = append(b, msg[:len(msg)-1]...)
	b = append(b, `,"`+IDField+`":"`...)
	b = append(b, id...)
	b = append(b, `","`+GroupField+`":"`...)
	b = append(b, group...)
	b = append(b, `"}`...)
	return b
}

// ResyncType is the type of the message a layer hands a group's local
// members when it knows they missed messages it cannot recover, after a
// lost connection to its backing service. Its "group" field names the
// group. Consumers tell their clients to reload that group's state.
const ResyncType = "herald.resync"

// resyncFrame returns the ResyncType message for group.
func resyncFrame(group string) []byte {
	return []byte(`{"type":"` + ResyncType + `","group":"` + group + `"}`)
}
