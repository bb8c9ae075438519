package notifier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore is a Store backed by the posts table. It only writes: the
// trigger installed by Migrate announces each post, and every instance's
// Listener delivers it.
type PostgresStore struct {
	pool     *pgxpool.Pool
	listener *Listener
}

var _ Store = (*PostgresStore)(nil)

// startWait bounds how long Recent waits for the Listener to start.
const startWait = 10 * time.Second

// NewPostgresStore returns a Store that keeps posts in pool's database.
// Run Migrate first. With a Listener, Recent answers only once the
// Listener knows where it starts in the log: a client that loads recent
// posts after joining the group then misses none, as every post committed
// after that read either is in it or is delivered to the client live.
func NewPostgresStore(pool *pgxpool.Pool, l *Listener) *PostgresStore {
	return &PostgresStore{pool: pool, listener: l}
}

// Create implements Store.
func (s *PostgresStore) Create(ctx context.Context, author, message string) (Post, error) {
	if err := ValidatePost(author, message); err != nil {
		return Post{}, err
	}
	rows, _ := s.pool.Query(ctx,
		"INSERT INTO posts (author, message) VALUES ($1, $2) RETURNING id, author, message, created_at",
		strings.TrimSpace(author), message)
	p, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Post])
	if err != nil {
		return Post{}, fmt.Errorf("notifier: create post: %w", err)
	}
	return p, nil
}

// Recent implements Store.
func (s *PostgresStore) Recent(ctx context.Context, limit int) ([]Post, error) {
	limit = min(limit, MaxRecent)
	if limit < 1 {
		return nil, nil
	}
	if s.listener != nil {
		t := time.NewTimer(startWait)
		defer t.Stop()
		select {
		case <-s.listener.begun:
		case <-t.C:
			return nil, errors.New("notifier: recent posts: the notifier has not started reading the log")
		case <-ctx.Done():
			return nil, fmt.Errorf("notifier: recent posts: %w", ctx.Err())
		}
	}
	rows, _ := s.pool.Query(ctx,
		"SELECT id, author, message, created_at FROM posts ORDER BY id DESC LIMIT $1", limit)
	posts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Post])
	if err != nil {
		return nil, fmt.Errorf("notifier: recent posts: %w", err)
	}
	return posts, nil
}
