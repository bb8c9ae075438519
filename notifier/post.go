package notifier

import (
	"context"
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

// ErrInvalidPost reports a post that breaks the rules of ValidatePost.
var ErrInvalidPost = errors.New("notifier: invalid post")

// Post is one row of the posts table.
type Post struct {
	ID        int64     `json:"id"`
	Author    string    `json:"author"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
}

// Store keeps posts for the HTTP API. Implementations are safe for
// concurrent use.
type Store interface {
	// Create validates and stores a post and returns it with its id and
	// time. The author is stored trimmed. An invalid post yields an error
	// wrapping ErrInvalidPost; any other error means the store or the
	// layer could not be reached.
	Create(ctx context.Context, author, message string) (Post, error)
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
