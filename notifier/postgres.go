package notifier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// Create implements Store. The post is always DeliveryPending: the
// trigger logs it at commit and the Listeners deliver it. A keyed Create
// records its key in herald_idempotency in the post's transaction, so
// that a retry on any instance finds it.
func (s *PostgresStore) Create(ctx context.Context, np NewPost) (Created, error) {
	if err := ValidatePost(np.Author, np.Message); err != nil {
		return Created{}, err
	}
	author := strings.TrimSpace(np.Author)
	c := Created{Delivery: DeliveryPending}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if np.IdempotencyKey != "" {
			replayed, err := claimKey(ctx, tx, np.IdempotencyKey, requestHash(author, np.Message), &c.Post)
			if err != nil || replayed {
				c.Replayed = replayed
				return err
			}
		}
		rows, _ := tx.Query(ctx,
			"INSERT INTO posts (author, message) VALUES ($1, $2) RETURNING id, author, message, created_at",
			author, np.Message)
		p, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Post])
		if err != nil {
			return err
		}
		c.Post = p
		if np.IdempotencyKey != "" {
			_, err = tx.Exec(ctx, "UPDATE herald_idempotency SET post_id = $2 WHERE key = $1", np.IdempotencyKey, p.ID)
		}
		return err
	})
	switch {
	case errors.Is(err, ErrIdempotencyKeyReused):
		return Created{}, err
	case refused(err) != nil:
		return Created{}, refused(err)
	case err != nil:
		return Created{}, fmt.Errorf("notifier: create post: %w", err)
	}
	return c, nil
}

// claimKey records key for the post tx is about to create, or, if an
// earlier Create recorded it, reads that one's post into p and reports
// replayed. A concurrent Create with the same key makes the insert wait
// until that one's transaction ends, so one of them creates the post and
// the other replays it.
func claimKey(ctx context.Context, tx pgx.Tx, key string, hash []byte, p *Post) (replayed bool, err error) {
	// An expired key is free again, whether or not a prune removed it.
	if _, err := tx.Exec(ctx, "DELETE FROM herald_idempotency WHERE key = $1 AND created_at < now() - $2::interval",
		key, IdempotencyLifetime); err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, "INSERT INTO herald_idempotency (key, request_hash) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
		key, hash)
	if err != nil || tag.RowsAffected() == 1 {
		return false, err
	}
	var first []byte
	var id int64
	if err := tx.QueryRow(ctx, "SELECT request_hash, post_id FROM herald_idempotency WHERE key = $1", key).Scan(&first, &id); err != nil {
		return false, err
	}
	if !bytes.Equal(first, hash) {
		return false, ErrIdempotencyKeyReused
	}
	rows, _ := tx.Query(ctx, "SELECT id, author, message, created_at FROM posts WHERE id = $1", id)
	*p, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Post])
	if errors.Is(err, pgx.ErrNoRows) {
		// Deleted since: the answer still names the post that was made.
		*p, err = Post{ID: id}, nil
	}
	return true, err
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

// refused returns a *RefusedError for an error of a write that the
// database refused by its rules: SQLSTATE class 23 (integrity
// constraint violation) or 22 (data exception). Other errors, an
// unreachable server among them, give nil.
func refused(err error) error {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || len(pg.Code) != 5 {
		return nil
	}
	switch {
	case pg.Code == "23505": // unique_violation
		return &RefusedError{Reason: "the post was not stored: it conflicts with a stored post", Kind: ErrPostConflict, Err: err}
	case strings.HasPrefix(pg.Code, "23"): // check, not null, foreign key, exclusion
		return &RefusedError{Reason: "the post was not stored: it breaks a rule of the posts table", Err: err}
	case strings.HasPrefix(pg.Code, "22"): // invalid text representation, value too long, ...
		return &RefusedError{Reason: "the post was not stored: the database cannot hold one of its values", Kind: ErrInvalidPost, Err: err}
	}
	return nil
}
