package notifier

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// errBadPayload reports a notification payload that is neither a whole
// post nor a bare id. Anyone who can connect may NOTIFY the channel, so
// the Listener logs and skips these rather than trusting them.
var errBadPayload = errors.New("notifier: bad notification payload")

// payload is what the trigger sends: every field of the row, or only the
// id when the row is too big for a notification.
type payload struct {
	ID        *int64     `json:"id"`
	Author    *string    `json:"author"`
	Message   *string    `json:"message"`
	CreatedAt *time.Time `json:"created_at"`
}

// decodePayload parses a notification payload. whole reports whether p
// holds the full row; otherwise only p.ID is set and the row must be read
// from the table.
func decodePayload(s string) (p Post, whole bool, err error) {
	var v payload
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return Post{}, false, fmt.Errorf("%w: %v", errBadPayload, err)
	}
	if v.ID == nil || *v.ID <= 0 {
		return Post{}, false, fmt.Errorf("%w: missing or non-positive id", errBadPayload)
	}
	p.ID = *v.ID
	switch {
	case v.Author == nil && v.Message == nil && v.CreatedAt == nil:
		return p, false, nil
	case v.Author == nil || v.Message == nil || v.CreatedAt == nil:
		return Post{}, false, fmt.Errorf("%w: post %d lacks author, message or created_at", errBadPayload, p.ID)
	}
	p.Author, p.Message, p.CreatedAt = *v.Author, *v.Message, *v.CreatedAt
	return p, true, nil
}
