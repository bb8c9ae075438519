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
	// ErrNoReceivers reports a send that reached nobody: no member of the
	// group, or no such channel, on any instance.
	ErrNoReceivers = errors.New("channellayer: no receivers")
	// ErrUnavailable reports that the layer's backing service cannot be
	// reached. The operation may succeed if retried later.
	ErrUnavailable = errors.New("channellayer: unavailable")
	// ErrFull reports a send refused because its receivers cannot take
	// more messages now (a layer with bounded inboxes). Retry later.
	ErrFull = errors.New("channellayer: receivers full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("channellayer: closed")
)

// Layer carries messages between the consumers of every instance that
// shares it. Implementations are safe for concurrent use.
type Layer interface {
	// NewChannel registers m as a local receiver and returns a channel name
	// unique across every instance sharing the layer. Messages sent to the
	// name are handed to m.Deliver.
	NewChannel(m groups.Member) (string, error)
	// CloseChannel unregisters a channel created by NewChannel on this
	// instance and removes it from every group it joined.
	CloseChannel(ctx context.Context, channel string) error
	// Send delivers msg to one channel, wherever it lives.
	Send(ctx context.Context, channel string, msg Message) error
	// GroupAdd adds a local channel to group. When it returns, every later
	// GroupSend reaches the channel.
	GroupAdd(ctx context.Context, group, channel string) error
	// GroupDiscard removes a local channel from group. Discarding a channel
	// that is not a member is not an error.
	GroupDiscard(ctx context.Context, group, channel string) error
	// GroupSend delivers msg to every member of group on every instance. It
	// returns an error wrapping ErrNoReceivers if the group has no member.
	GroupSend(ctx context.Context, group string, msg Message) error
	// Close releases the layer's resources. Local channels stop receiving.
	Close() error
}

// LocalSender is implemented by layers that can deliver to this
// instance's members of a group without touching other instances. It
// suits a source that every instance observes on its own, such as a
// Postgres notification each instance LISTENs to: sending it locally on
// each instance delivers it exactly once to every member.
type LocalSender interface {
	// GroupSendLocal delivers msg to this instance's members of group. It
	// returns an error wrapping ErrNoReceivers if there is none.
	GroupSendLocal(ctx context.Context, group string, msg Message) error
}

// OnceSender is implemented by layers that can take the same message
// from every instance and send it to the group once. It suits a source
// that every instance reads on its own and in the same order, such as the
// Postgres notifier's log: each instance offers every row, the first
// offer of each row is sent like GroupSend (with a history id where the
// group keeps history, so clients can resume it on any instance), and
// the later offers are dropped. Unlike GroupSendLocal, the message then
// reaches the members of instances that did not read it themselves, such
// as the clients of an instance that died, once they reconnect elsewhere.
//
// A source sends to one group, which its calls name: a layer may keep the
// source's record beside the group's data (RedisCluster keeps it in the
// group's slot).
type OnceSender interface {
	// GroupSendOnce sends msg to every member of group, on every
	// instance, unless a message of source with seq or a higher seq was
	// sent already; then it does nothing and reports sent == false. The
	// seq of a source must increase with each message. Like GroupSend, it
	// returns an error wrapping ErrNoReceivers when a sent message reached
	// no member.
	GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg Message) (sent bool, err error)
	// LastSent returns the highest seq of source sent so far to group,
	// and false if the layer knows of none (nothing sent yet, or the
	// record is gone: the memory layer forgets with its process, Redis
	// after a day without sends). A reader starting afresh goes on from
	// there, so that what was committed while no instance ran is sent too.
	LastSent(ctx context.Context, source, group string) (seq int64, ok bool, err error)
}

// KeyedSender is implemented by layers that apply a keyed message
// (Message.WithKey) at most once per key and destination: a second
// GroupSend of a message with the same key to the same group (Send to the
// same channel, GroupSendOnce of the same group) within the window
// delivers nothing and returns what the first returned. The Redis layers
// also make every unkeyed call safe from their client's own retries.
type KeyedSender interface {
	// KeyWindow returns how long the layer remembers a key after the
	// send that first used it.
	KeyWindow() time.Duration
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

// SendLocal is GroupSendLocal for a layer whose local members are in reg:
// it checks the send, and delivers msg to reg's members of group.
func SendLocal(reg *groups.Registry, group string, msg Message, closed bool) error {
	if err := CheckSend(ValidGroupName(group), msg, closed); err != nil {
		return err
	}
	if reg.SendGroup(group, msg.typ, msg.data) == 0 {
		return fmt.Errorf("%w: group %q has no local member", ErrNoReceivers, group)
	}
	return nil
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

// Checker is implemented by layers whose backing service can be probed.
type Checker interface {
	// Check reports whether the layer can currently send.
	Check(ctx context.Context) error
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
