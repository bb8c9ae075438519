package channellayer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/groups"
)

var (
	// ErrInvalidName reports a group or channel name that breaks the
	// naming rules.
	ErrInvalidName = errors.New("channellayer: invalid name")
	// ErrInvalidMessage reports a message that is not a JSON object with a
	// non-empty string "type".
	ErrInvalidMessage = errors.New("channellayer: invalid message")
	// ErrNoReceivers reports a send that went nowhere: no member of the
	// group (or no such channel) on any instance, and no history that
	// keeps the message.
	ErrNoReceivers = errors.New("channellayer: no receivers")
	// ErrUnavailable reports that the layer's backing service cannot be
	// reached. The operation may succeed if retried later.
	ErrUnavailable = errors.New("channellayer: unavailable")
	// ErrFull reports a send refused because its receivers cannot take
	// more messages now (a layer with bounded inboxes). Retry later.
	ErrFull = errors.New("channellayer: receivers full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("channellayer: closed")
	// ErrUnsupported is wrapped by the error of a method the layer cannot
	// carry out at all, whatever its arguments (GroupSendOnce on a layer
	// that cannot send once). It matches errors.ErrUnsupported too.
	ErrUnsupported = fmt.Errorf("channellayer: %w", errors.ErrUnsupported)
)

// Layer carries messages between the consumers of every instance that
// shares it. It is the whole contract: every layer implements every
// method, and a layer that lacks a capability says so through the method
// itself (History answers ErrNoHistory, GroupSendOnce ErrUnsupported,
// KeyWindow zero), so a wrapper that embeds a Layer hides nothing.
// Implementations are safe for concurrent use; layertest.Run checks one.
type Layer interface {
	// NewChannel registers m as a local receiver and returns a channel name
	// unique across every instance sharing the layer. Messages sent to the
	// name are handed to m.Deliver.
	NewChannel(m groups.Member) (string, error)
	// CloseChannel unregisters a channel created by NewChannel on this
	// instance and removes it from every group it joined.
	CloseChannel(ctx context.Context, channel string) error
	// Send delivers msg to one channel, wherever it lives. It returns an
	// error wrapping ErrNoReceivers if there is no such channel.
	Send(ctx context.Context, channel string, msg Message) error
	// GroupAdd adds a local channel to group. When it returns, every later
	// GroupSend reaches the channel.
	GroupAdd(ctx context.Context, group, channel string) error
	// GroupDiscard removes a local channel from group. Discarding a channel
	// that is not a member is not an error.
	GroupDiscard(ctx context.Context, group, channel string) error

	// GroupSend delivers msg to every member of group on every instance,
	// and keeps it in the group's history if it has one. The result says
	// which (see SendResult). A message that reached no member and was
	// not kept went nowhere: the error wraps ErrNoReceivers.
	GroupSend(ctx context.Context, group string, msg Message) (SendResult, error)
	// GroupSendLocal delivers msg to this instance's members of group
	// without touching other instances, with the same results and errors
	// as GroupSend; it keeps the message in a history only on a layer
	// whose history lives in this process (Memory). It suits a source
	// that every instance observes on its own, such as a Postgres
	// notification each instance LISTENs to: sending it locally on each
	// instance delivers it exactly once to every member.
	GroupSendLocal(ctx context.Context, group string, msg Message) (SendResult, error)
	// GroupSendOnce takes the same message from every instance and sends
	// it to group once, as GroupSend does, unless a message of source
	// with seq or a higher seq was sent already: then it sends nothing
	// and reports SendResult.Skipped. The seq of a source must increase
	// with each message. It suits a source that every instance reads on
	// its own and in the same order, such as the Postgres notifier's
	// log: each instance offers every row, and the row reaches the
	// members of every instance (with a history id where the group keeps
	// history), even those of an instance that did not read it. A
	// source sends to one group, which its calls name: a layer may keep
	// the source's record beside the group's data. A layer that cannot
	// send once returns an error wrapping ErrUnsupported, at once and
	// whatever its arguments.
	GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg Message) (SendResult, error)
	// LastSent returns the highest seq of source sent so far to group,
	// and false if the layer knows of none (nothing sent yet, or the
	// record is gone: the memory layer forgets with its process, Redis
	// after a day without sends). A reader starting afresh goes on from
	// there, so that what was committed while no instance ran is sent
	// too. A layer that cannot send once returns an error wrapping
	// ErrUnsupported, as GroupSendOnce does.
	LastSent(ctx context.Context, source, group string) (seq int64, ok bool, err error)

	// History returns the messages of group published after the one with
	// id since, oldest first, each as the frame its members received
	// (Message.ID set). For a group that keeps no history (see
	// HistoryPolicy; a layer may keep none at all) it returns an error
	// wrapping ErrNoHistory, at once and without touching the backing
	// service. It returns an error wrapping ErrHistoryGap when it cannot
	// return all of them: since is older than the history keeps, unknown,
	// or more than limit messages followed it.
	History(ctx context.Context, group, since string, limit int) ([]Message, error)
	// KeyWindow returns how long the layer remembers the idempotency key
	// of a keyed message (Message.WithKey) after the send that first used
	// it: within the window, a second GroupSend of a message with the
	// same key to the same group (Send to the same channel,
	// GroupSendOnce of the same group) delivers nothing and returns what
	// the first returned. Zero means the layer does not apply keys: every
	// send is delivered.
	KeyWindow() time.Duration
	// Check reports whether the layer can currently send: nil, or an
	// error wrapping ErrUnavailable or ErrClosed. Callers bound the wait
	// with ctx; the Redis layers of this package answer within a second
	// whatever the state of their nodes.
	Check(ctx context.Context) error
	// Stats returns the layer's counters, for metrics.
	Stats() Stats
	// Close releases the layer's resources. Local channels stop receiving.
	Close() error
}

// SendResult says what a group send did.
type SendResult struct {
	// ID is the history id the message got, "" if its group keeps no
	// history (or none in this process, for GroupSendLocal).
	ID string
	// Delivered reports that the message reached a member (on a shared
	// layer: an instance with members of the group).
	Delivered bool
	// Skipped reports a GroupSendOnce offer of a seq already sent: it
	// sent nothing, and ID and Delivered are false.
	Skipped bool
}

// Kept reports whether the group's history keeps the message, so that a
// member that resumes gets it even if nobody did now.
func (r SendResult) Kept() bool { return r.ID != "" }

// Stats counts what a layer holds and what it met.
type Stats struct {
	// Local counts this instance's channels, groups and memberships.
	Local groups.Stats
	// History counts the histories a layer holds in this process; nil
	// for a layer that keeps them elsewhere (Redis) or keeps none.
	History *HistoryStats
	// Events counts what the layer met since it was made, by kind, such
	// as "reconnects" to its backing service; nil for a layer that counts
	// nothing.
	Events map[string]int64
}

// KeyWindow is how long the layers of this package remember an
// idempotency key: a day, longer than any publisher retries one request.
const KeyWindow = 24 * time.Hour

// MaxKeyLength bounds the idempotency key of a message.
const MaxKeyLength = 200

// CheckSend returns the error a send must report, in this order: nameErr
// (from ValidGroupName or ValidChannelName), ErrInvalidMessage for a zero
// Message or a key longer than MaxKeyLength, ErrClosed when the layer is
// closed; or nil.
func CheckSend(nameErr error, msg Message, closed bool) error {
	if nameErr != nil {
		return nameErr
	}
	if !msg.Valid() {
		return fmt.Errorf("%w: zero Message", ErrInvalidMessage)
	}
	if len(msg.key) > MaxKeyLength {
		return fmt.Errorf("%w: idempotency key of %d bytes, the limit is %d", ErrInvalidMessage, len(msg.key), MaxKeyLength)
	}
	if closed {
		return ErrClosed
	}
	return nil
}

// SendLocal is GroupSendLocal for a layer whose local members are in reg
// and whose history, if any, lives elsewhere: it checks the send, and
// delivers msg to reg's members of group.
func SendLocal(reg *groups.Registry, group string, msg Message, closed bool) (SendResult, error) {
	if err := CheckSend(ValidGroupName(group), msg, closed); err != nil {
		return SendResult{}, err
	}
	if reg.SendGroup(group, msg.typ, msg.data) == 0 {
		return SendResult{}, fmt.Errorf("%w: group %q has no local member", ErrNoReceivers, group)
	}
	return SendResult{Delivered: true}, nil
}

// checkSource reports an error for arguments of GroupSendOnce that no
// source can have.
func checkSource(source string, seq int64) error {
	if source == "" {
		return fmt.Errorf("%w: empty source", ErrInvalidName)
	}
	if seq < 0 {
		return fmt.Errorf("%w: negative seq %d of source %q", ErrInvalidMessage, seq, truncate(source))
	}
	return nil
}

// MaxNameLength is one more than the longest valid group or channel name,
// as in Django Channels.
const MaxNameLength = 100

// ValidGroupName reports an error wrapping ErrInvalidName unless name is
// made of ASCII letters, digits, '-', '_' and '.', and is shorter than
// MaxNameLength.
func ValidGroupName(name string) error {
	if err := validName(name, false); err != nil {
		return fmt.Errorf("%w: group %q: %s", ErrInvalidName, truncate(name), err.Error())
	}
	return nil
}

// ValidChannelName is ValidGroupName for channel names, which may also hold
// one '!' separating the instance part from the local part.
func ValidChannelName(name string) error {
	if err := validName(name, true); err != nil {
		return fmt.Errorf("%w: channel %q: %s", ErrInvalidName, truncate(name), err.Error())
	}
	return nil
}

type nameError string

func (e nameError) Error() string { return string(e) }

func validName(name string, channel bool) error {
	if name == "" {
		return nameError("empty")
	}
	if len(name) >= MaxNameLength {
		return nameError(fmt.Sprintf("%d bytes long, the limit is %d", len(name), MaxNameLength-1))
	}
	bang := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		case c == '!' && channel && !bang && i > 0:
			bang = true
		default:
			return nameError(fmt.Sprintf("character %q at byte %d is not allowed (use ASCII letters, digits, '-', '_' and '.')", c, i))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > MaxNameLength+20 {
		return s[:MaxNameLength] + "..."
	}
	return s
}
