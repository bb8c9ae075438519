package notifier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// MemoryStore is a Store for a Herald without Postgres. It keeps the
// newest MaxRecent posts in memory and delivers each one itself, with
// GroupSend, when it is created. Posts are lost on restart and instances
// do not share them.
type MemoryStore struct {
	layer channellayer.Layer
	group string

	// sendMu makes creation and delivery one step, so that clients get
	// posts in id order; mu guards posts only, so that Recent does not
	// wait on a slow layer.
	sendMu sync.Mutex
	mu     sync.Mutex
	nextID int64
	posts  []Post // oldest first, at most MaxRecent
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore that announces posts to
// group on layer. An empty group means DefaultGroup.
func NewMemoryStore(layer channellayer.Layer, group string) (*MemoryStore, error) {
	if group == "" {
		group = DefaultGroup
	}
	if err := channellayer.ValidGroupName(group); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	return &MemoryStore{layer: layer, group: group}, nil
}

// Create implements Store. If the layer fails, the post is kept and
// returned along with an error wrapping the layer's, such as
// channellayer.ErrUnavailable.
func (s *MemoryStore) Create(ctx context.Context, author, message string) (Post, error) {
	if err := ValidatePost(author, message); err != nil {
		return Post{}, err
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()

	s.mu.Lock()
	s.nextID++
	p := Post{ID: s.nextID, Author: strings.TrimSpace(author), Message: message, CreatedAt: time.Now().UTC()}
	if len(s.posts) == MaxRecent {
		s.posts = slices.Delete(s.posts, 0, 1)
	}
	s.posts = append(s.posts, p)
	s.mu.Unlock()

	msg, err := GossipMessage(p)
	if err == nil {
		err = s.layer.GroupSend(ctx, s.group, msg)
	}
	if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
		return p, fmt.Errorf("notifier: post %d stored but not delivered: %w", p.ID, err)
	}
	return p, nil
}

// Recent implements Store.
func (s *MemoryStore) Recent(_ context.Context, limit int) ([]Post, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit = min(limit, len(s.posts))
	if limit < 1 {
		return nil, nil
	}
	recent := slices.Clone(s.posts[len(s.posts)-limit:])
	slices.Reverse(recent)
	return recent, nil
}
