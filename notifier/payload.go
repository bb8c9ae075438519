package notifier

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// errBadRow reports a logged row that a bridge cannot turn into a
// message. Anyone allowed to write the log could put anything in it, so
// the Listener logs and skips these rather than trusting them.
var errBadRow = errors.New("notifier: bad row")

// postRow is a row of posts as to_jsonb writes it. Other columns, such as
// ones an app added, are ignored.
type postRow struct {
	ID        *int64     `json:"id"`
	Author    *string    `json:"author"`
	Message   *string    `json:"message"`
	CreatedAt *time.Time `json:"created_at"`
}

// decodePost parses a logged posts row.
func decodePost(row []byte) (Post, error) {
	var v postRow
	if err := json.Unmarshal(row, &v); err != nil {
		return Post{}, fmt.Errorf("%w: %v", errBadRow, err)
	}
	if v.ID == nil || *v.ID <= 0 {
		return Post{}, fmt.Errorf("%w: missing or non-positive id", errBadRow)
	}
	if v.Author == nil || v.Message == nil || v.CreatedAt == nil {
		return Post{}, fmt.Errorf("%w: post %d lacks author, message or created_at", errBadRow, *v.ID)
	}
	return Post{ID: *v.ID, Author: *v.Author, Message: *v.Message, CreatedAt: *v.CreatedAt}, nil
}
