package notifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// MaxPending is the most posts a MemoryStore keeps waiting for the layer;
// beyond it Create refuses new posts with ErrBacklogFull.
const MaxPending = 10000

// maxMemoryKeys bounds the idempotency keys a MemoryStore remembers; the
// oldest is forgotten first.
const maxMemoryKeys = 10000

// checkTimeout bounds the probe of the layer before pending posts are
// sent.
const checkTimeout = 2 * time.Second

// Backoff between two attempts to deliver the oldest pending post.
const (
	outboxMinBackoff = 100 * time.Millisecond
	outboxMaxBackoff = 5 * time.Second
)

// MemoryStore is a Store for a Herald without Postgres. It keeps the
// newest MaxRecent posts in memory and delivers each one itself, with
// GroupSend, when it is created. Posts are lost on restart and instances
// do not share them.
//
// A post the layer cannot take (Redis down) is kept in an outbox, in
// order, and Create reports it pending; Run delivers the outbox once the
// layer is back, and the posts created meanwhile follow it, so clients
// still get posts in id order. Run must be running for pending posts to
// be delivered.
//
// Post ids start from the creation time of the store (Unix milliseconds
// times 1000) and increase by one, so a restarted store does not hand out
// the ids of posts that clients still show. They stay below 2^53, exact
// in JavaScript.
type MemoryStore struct {
	layer channellayer.Layer
	group string

	// sendMu makes creation and delivery one step, so that clients get
	// posts in id order, and guards outbox and keys; mu guards posts
	// only, so that Recent does not wait on a slow layer.
	sendMu sync.Mutex
	outbox []Post // created, not yet delivered, oldest first
	keys   map[string]memoryKey
	order  []string // keys, oldest first
	wake   chan struct{}

	running atomic.Bool

	mu     sync.Mutex
	nextID int64
	posts  []Post // oldest first, at most MaxRecent
}

// memoryKey is what a MemoryStore remembers of a keyed Create.
type memoryKey struct {
	hash    []byte
	created Created
	at      time.Time
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
	return &MemoryStore{
		layer:  layer,
		group:  group,
		keys:   make(map[string]memoryKey),
		wake:   make(chan struct{}, 1),
		nextID: time.Now().UnixMilli() * 1000,
	}, nil
}

// Create implements Store. When the layer cannot take the post, it is
// kept for Run to deliver and reported as DeliveryPending; so is every
// post created while older ones wait.
func (s *MemoryStore) Create(ctx context.Context, np NewPost) (Created, error) {
	if err := ValidatePost(np.Author, np.Message); err != nil {
		return Created{}, err
	}
	author := strings.TrimSpace(np.Author)
	var hash []byte
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if np.IdempotencyKey != "" {
		hash = requestHash(author, np.Message)
		s.expireKeys(time.Now())
		if k, ok := s.keys[np.IdempotencyKey]; ok {
			if !bytes.Equal(k.hash, hash) {
				return Created{}, ErrIdempotencyKeyReused
			}
			c := k.created
			c.Replayed = true
			return c, nil
		}
	}
	if len(s.outbox) >= MaxPending {
		return Created{}, fmt.Errorf("%w (%d)", ErrBacklogFull, len(s.outbox))
	}

	s.mu.Lock()
	s.nextID++
	p := Post{ID: s.nextID, Author: author, Message: np.Message, CreatedAt: time.Now().UTC()}
	if len(s.posts) == MaxRecent {
		s.posts = slices.Delete(s.posts, 0, 1)
	}
	s.posts = append(s.posts, p)
	s.mu.Unlock()

	c := Created{Post: p, Delivery: DeliverySent}
	if len(s.outbox) > 0 {
		c.Delivery = DeliveryPending
		s.outbox = append(s.outbox, p)
	} else if err := s.send(ctx, p); err != nil {
		slog.Default().Warn("notifier: post stored, to be delivered once the channel layer takes it", "err", err, "id", p.ID)
		c.Delivery = DeliveryPending
		s.outbox = append(s.outbox, p)
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if np.IdempotencyKey != "" {
		s.remember(np.IdempotencyKey, hash, c)
	}
	return c, nil
}

// send announces p. A group without members is not a failure. The key
// lets a layer that dedupes keyed sends drop the second of two attempts
// when the first was applied but answered with an error.
func (s *MemoryStore) send(ctx context.Context, p Post) error {
	msg, err := GossipMessage(p)
	if err != nil {
		return err
	}
	_, err = s.layer.GroupSend(ctx, s.group, msg.WithKey("post:"+s.group+":"+strconv.FormatInt(p.ID, 10)))
	if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
		return err
	}
	return nil
}

// remember records the result of a keyed Create, forgetting the oldest
// key when maxMemoryKeys are kept. The caller holds sendMu.
func (s *MemoryStore) remember(key string, hash []byte, c Created) {
	if len(s.order) >= maxMemoryKeys {
		delete(s.keys, s.order[0])
		s.order = s.order[1:]
	}
	s.keys[key] = memoryKey{hash: hash, created: c, at: time.Now()}
	s.order = append(s.order, key)
}

// expireKeys forgets the keys older than IdempotencyLifetime. The caller
// holds sendMu.
func (s *MemoryStore) expireKeys(now time.Time) {
	n := 0
	for n < len(s.order) && now.Sub(s.keys[s.order[n]].at) >= IdempotencyLifetime {
		delete(s.keys, s.order[n])
		n++
	}
	s.order = s.order[n:]
}

// Run delivers pending posts, oldest first, retrying with jittered
// backoff while the layer cannot take them, until ctx is done; then it
// returns ctx.Err(). The posts still pending then are not delivered. Run
// may be called again after it returns, but not concurrently.
func (s *MemoryStore) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("notifier: MemoryStore.Run is already running")
	}
	defer s.running.Store(false)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
		var backoff time.Duration
		for {
			sent, left, err := s.deliverOldest(ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				if left > 0 {
					continue
				}
				if sent {
					slog.Default().Info("notifier: delivered the posts kept while the channel layer was unreachable")
				}
				break
			}
			backoff = min(max(2*backoff, outboxMinBackoff), outboxMaxBackoff)
			slog.Default().Warn("notifier: pending posts wait for the channel layer", "err", err, "pending", left, "retry_in", backoff)
			t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// deliverOldest sends the oldest pending post, and reports whether it
// did and how many posts are left pending.
//
// It first waits for the layer's probe (Layer.Check) to pass: a layer
// that takes a send while this instance's own subscription is still
// down would deliver the post to every instance but this one.
func (s *MemoryStore) deliverOldest(ctx context.Context) (sent bool, left int, err error) {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	err = s.layer.Check(cctx)
	cancel()
	if err != nil {
		return false, s.Pending(), err
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if len(s.outbox) == 0 {
		return false, 0, nil
	}
	if err := s.send(ctx, s.outbox[0]); err != nil {
		return false, len(s.outbox), err
	}
	s.outbox[0] = Post{}
	s.outbox = s.outbox[1:]
	return true, len(s.outbox), nil
}

// Pending returns how many posts wait for the layer.
func (s *MemoryStore) Pending() int {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return len(s.outbox)
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
