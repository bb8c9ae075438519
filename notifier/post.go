package notifier

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald/channellayer"
)

// Limits enforced by ValidatePost.
const (
	// MaxAuthorLength is the longest author, in characters, after
	// surrounding space is trimmed.
	MaxAuthorLength = 100
	// MaxMessageBytes is the longest message, in bytes. It is above the
	// NOTIFY payload limit on purpose: the Listener reads big posts by id.
	MaxMessageBytes = 20000
	// MaxRecent is the most posts Recent returns, and the number of posts
	// a MemoryStore keeps.
	MaxRecent = 1000
)

// Message fields of a post announcement.
const (
	// MessageType is the "type" of the message that announces a post.
	MessageType = "name.gossip"
	// EventNewPost is its "event".
	EventNewPost = "New Post"
)

var (
	// ErrInvalidPost reports a post that breaks the rules of ValidatePost.
	ErrInvalidPost = errors.New("notifier: invalid post")
	// ErrIdempotencyKeyReused reports a Create whose idempotency key was
	// used, within IdempotencyLifetime, for a different post.
	ErrIdempotencyKeyReused = errors.New("notifier: idempotency key already used for a different post")
	// ErrBacklogFull reports a Create refused, and not stored, because
	// MaxPending posts already wait for the layer. Retry later.
	ErrBacklogFull = errors.New("notifier: too many posts waiting for the channel layer")
)

// IdempotencyLifetime is how long Create remembers an idempotency key:
// a retry within it is answered with the first result.
const IdempotencyLifetime = 24 * time.Hour

// The delivery of a created post, as Created.Delivery reports it.
const (
	// DeliverySent: the store handed the post to the channel layer.
	DeliverySent = "sent"
	// DeliveryPending: the post is stored and its delivery follows
	// without the client doing anything: the Listeners deliver it from
	// the log (PostgresStore), or the store does once the layer is back
	// (MemoryStore).
	DeliveryPending = "pending"
)

// Post is one row of the posts table.
type Post struct {
	ID        int64     `json:"id"`
	Author    string    `json:"author"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

// NewPost is a post to create.
type NewPost struct {
	Author  string
	Message string
	// IdempotencyKey, if not empty, makes a retried Create apply once:
	// within IdempotencyLifetime, a Create with the same key returns the
	// first one's result, with Replayed set, instead of storing another
	// post; one with the same key but another author or message fails
	// with ErrIdempotencyKeyReused. The HTTP API takes it from the
	// Idempotency-Key header.
	IdempotencyKey string
}

// Created is the result of Store.Create. Its JSON form is the post's with
// "delivery" added.
type Created struct {
	Post
	// Delivery is DeliverySent or DeliveryPending.
	Delivery string `json:"delivery"`
	// Replayed reports a result of an earlier Create with the same
	// idempotency key.
	Replayed bool `json:"-"`
}

// Store keeps posts for the HTTP API. Implementations are safe for
// concurrent use.
type Store interface {
	// Create validates and stores a post and returns it with its id and
	// time, and whether it was delivered yet. The author is stored
	// trimmed. A stored post is never an error: what the store could not
	// deliver yet it delivers later (Created.Delivery). An error means
	// nothing was stored: ErrInvalidPost, ErrIdempotencyKeyReused,
	// ErrBacklogFull, or the store could not be reached.
	Create(ctx context.Context, p NewPost) (Created, error)
	// Recent returns up to limit posts, newest first. limit is capped at
	// MaxRecent; below 1 it returns none.
	Recent(ctx context.Context, limit int) ([]Post, error)
}

// ValidatePost reports an error wrapping ErrInvalidPost unless author,
// once trimmed, holds 1 to MaxAuthorLength characters and message holds 1
// to MaxMessageBytes bytes, both valid UTF-8. NUL is refused too, because
// Postgres text cannot hold it.
func ValidatePost(author, message string) error {
	author = strings.TrimSpace(author)
	switch {
	case !utf8.ValidString(author):
		return fmt.Errorf("%w: author is not valid UTF-8", ErrInvalidPost)
	case author == "":
		return fmt.Errorf("%w: author is empty", ErrInvalidPost)
	case utf8.RuneCountInString(author) > MaxAuthorLength:
		return fmt.Errorf("%w: author is longer than %d characters", ErrInvalidPost, MaxAuthorLength)
	case strings.ContainsRune(author, 0):
		return fmt.Errorf("%w: author contains NUL", ErrInvalidPost)
	case !utf8.ValidString(message):
		return fmt.Errorf("%w: message is not valid UTF-8", ErrInvalidPost)
	case message == "":
		return fmt.Errorf("%w: message is empty", ErrInvalidPost)
	case len(message) > MaxMessageBytes:
		return fmt.Errorf("%w: message is longer than %d bytes", ErrInvalidPost, MaxMessageBytes)
	case strings.ContainsRune(message, 0):
		return fmt.Errorf("%w: message contains NUL", ErrInvalidPost)
	}
	return nil
}

// gossip is the wire shape of a post announcement; the field order is the
// order clients see.
type gossip struct {
	Type    string `json:"type"`
	Event   string `json:"event"`
	Sender  string `json:"sender"`
	Message string `json:"message"`
	ID      int64  `json:"id"`
}

// GossipMessage returns the message that announces p to clients. The
// Listener and MemoryStore both build it here, so clients see one shape
// whichever path a post took.
func GossipMessage(p Post) (channellayer.Message, error) {
	return channellayer.NewMessage(gossip{
		Type:    MessageType,
		Event:   EventNewPost,
		Sender:  p.Author,
		Message: p.Message,
		ID:      p.ID,
	})
}

// requestHash identifies what a keyed Create asked for, so that a key
// reused for another post is told apart from a retry. Neither field may
// hold NUL (ValidatePost), so the separator is unambiguous.
func requestHash(author, message string) []byte {
	h := sha256.New()
	h.Write([]byte(author))
	h.Write([]byte{0})
	h.Write([]byte(message))
	return h.Sum(nil)
}

// ErrPostConflict reports a post that the database refused because it
// clashes with a stored row (a unique constraint of the posts table).
var ErrPostConflict = errors.New("notifier: post conflicts with a stored one")

// RefusedError is a post that the database's own rules refused: a
// constraint of the posts table (unique, check, not null, foreign key)
// or a value it cannot take. Nothing was stored, and a retry fails the
// same way. It wraps ErrPostConflict for a unique violation and
// ErrInvalidPost for a value the database cannot take, and always the
// database's error, whose text, with constraint names and SQLSTATEs, is
// for the log: Reason is the sentence for the client.
type RefusedError struct {
	Reason string // plain words for the client
	Kind   error  // ErrPostConflict, ErrInvalidPost, or nil for another rule
	Err    error  // the database's error
}

func (e *RefusedError) Error() string {
	return "notifier: the database refused the post: " + e.Err.Error()
}

func (e *RefusedError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}
