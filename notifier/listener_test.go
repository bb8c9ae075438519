package notifier_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/notifier/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// localOnly is a layer that cannot send once, as it says through
// ErrUnsupported, and whose GroupSend fails, to prove that the Listener
// delivers with GroupSendLocal on such layers.
type localOnly struct {
	channellayer.Layer
}

func (localOnly) GroupSend(context.Context, string, channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendResult{}, errors.New("GroupSend called; the Listener must send locally")
}

func (localOnly) GroupSendOnce(context.Context, string, int64, string, channellayer.Message) (channellayer.SendResult, error) {
	return channellayer.SendResult{}, channellayer.ErrUnsupported
}

func (localOnly) LastSent(context.Context, string, string) (int64, bool, error) {
	return 0, false, channellayer.ErrUnsupported
}

func TestListenerDeliversInsert(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	mem := channellayer.NewMemory()
	layer := localOnly{mem}
	in := join(t, layer)
	l := startListener(t, pool, layer, notifier.Config{})

	p := insert(t, pool, "alice", `hello "world" <b>&</b> ünïcødé ✓`)
	in.expect(t, p)

	if err := l.Run(t.Context()); err == nil {
		t.Error("a second concurrent Run returned nil")
	}
	if !l.Ready() {
		t.Error("Ready() = false while listening")
	}
}

func TestListenerIgnoresUpdateDeleteAndRollback(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	// Polling between every statement must not disturb listening.
	startListener(t, pool, layer, notifier.Config{PollInterval: 5 * time.Millisecond})

	p := insert(t, pool, "bob", "first")
	in.expect(t, p)

	if _, err := pool.Exec(t.Context(), "UPDATE posts SET message = 'edited' WHERE id = $1", p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), "DELETE FROM posts WHERE id = $1", p.ID); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	insert(t, tx, "bob", "rolled back")
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Notifications arrive in commit order, so if the update, the delete
	// or the rollback had sent anything it would come before this.
	last := insert(t, pool, "bob", "sentinel")
	in.expect(t, last)
}

func TestListenerLargePosts(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	startListener(t, pool, layer, notifier.Config{})

	// Step across the size where the trigger stops sending the whole row,
	// then far past the NOTIFY limit; quotes and multi-byte characters
	// make the JSON longer than the message.
	var msgs []string
	for size := 7770; size <= 7850; size += 5 {
		msgs = append(msgs, strings.Repeat("x", size))
	}
	msgs = append(msgs, strings.Repeat(`é"\`, notifier.MaxMessageBytes/4))
	for _, msg := range msgs {
		in.expect(t, insert(t, pool, "carol", msg))
	}
}

func TestListenerOutOfOrderCommits(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	startListener(t, pool, layer, notifier.Config{})

	// The older id commits last. A Listener that skipped ids below the
	// highest delivered would drop it.
	older, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer older.Rollback(context.Background())
	p1 := insert(t, older, "dave", "older id, later commit")
	p2 := insert(t, pool, "dave", "newer id, earlier commit")
	if err := older.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	in.expect(t, p2)
	in.expect(t, p1)
}

func TestListenerSkipsStrayNotificationsAndBadRows(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	l := startListener(t, pool, layer, notifier.Config{})

	// Anyone may NOTIFY the channel; a notification only makes the
	// Listener read the log, whatever its payload.
	for _, payload := range []string{"", "not json", `{"id":999999}`} {
		if _, err := pool.Exec(t.Context(), "SELECT pg_notify($1, $2)", notifier.Channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	// Rows written to the log by hand, of no bridged table or not a post.
	for _, row := range [][2]string{
		{"posts", `{"id": 1}`}, {"posts", `[]`}, {"posts", `{"id": -1, "author": "x", "message": "y", "created_at": "2025-01-01T00:00:00Z"}`},
		{"elsewhere", `{"id": 1}`},
	} {
		if _, err := pool.Exec(t.Context(), "INSERT INTO herald_log (source, data) VALUES ($1, $2)", row[0], row[1]); err != nil {
			t.Fatal(err)
		}
	}
	in.expectAll(t, pool, []notifier.Post{insert(t, pool, "erin", "still here")})
	if !l.Ready() {
		t.Error("Ready() = false after stray notifications")
	}
}

func TestListenerCatchesUp(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	l := startListener(t, pool, layer, notifier.Config{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})

	// One connection for the test, kept while new ones are refused, and
	// one to another database, since a database cannot refuse
	// connections on its own behalf.
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	admin, err := pgx.Connect(t.Context(), pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var dbName string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	allowConnections := func(allow bool) {
		t.Helper()
		sql := fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", pgx.Identifier{dbName}.Sanitize(), allow)
		if _, err := admin.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}

	var want []notifier.Post
	add := func(n int, phase string) {
		for i := range n {
			want = append(want, insert(t, conn, "frank", fmt.Sprintf("%s %d", phase, i)))
		}
	}
	add(10, "before")

	// Cut the Listener off and keep it off while posts are written, so
	// that they can only reach it through catch-up.
	allowConnections(false)
	var killed bool
	err = conn.QueryRow(t.Context(),
		"SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'herald-notifier'",
		dbName).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminate listener: killed=%v, err=%v", killed, err)
	}
	waitReady(t, l, false)
	add(600, "away") // more than one catch-up page

	// Let it back in while posts keep coming, so catch-up and live
	// notifications overlap.
	allowConnections(true)
	add(300, "after")

	in.expectAll(t, conn, want)
	if !l.Ready() {
		t.Error("Ready() = false after reconnecting")
	}
}

func TestListenerWaitsForMigrate(t *testing.T) {
	t.Parallel()
	pool := newPool(t, false)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	l, err := notifier.New(pool, layer, notifier.Config{
		Logger:     testLogger(t),
		MinBackoff: time.Millisecond,
		MaxBackoff: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// Until the table exists the Listener retries and is not ready.
	if l.Ready() {
		t.Fatal("Ready() before the posts table exists")
	}
	if err := notifier.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, true)
	in.expect(t, insert(t, pool, "jane", "after migrating"))
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	pool := newPool(t, false)

	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() { errs <- notifier.Migrate(t.Context(), pool) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if err := notifier.Migrate(t.Context(), pool); err != nil {
		t.Errorf("Migrate again: %v", err)
	}

	var triggers int
	err := pool.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_trigger WHERE tgrelid = 'posts'::regclass AND NOT tgisinternal").Scan(&triggers)
	if err != nil || triggers != 1 {
		t.Fatalf("posts has %d triggers (err %v), want 1", triggers, err)
	}
	layer := channellayer.NewMemory()
	in := join(t, layer)
	startListener(t, pool, layer, notifier.Config{})
	in.expect(t, insert(t, pool, "gina", "after concurrent migrations"))
}

func TestPostgresStore(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	startListener(t, pool, layer, notifier.Config{})
	store := notifier.NewPostgresStore(pool, nil)

	if _, err := store.Create(t.Context(), notifier.NewPost{Author: " ", Message: "hi"}); !errors.Is(err, notifier.ErrInvalidPost) {
		t.Errorf("Create with blank author: %v, want ErrInvalidPost", err)
	}
	var created []notifier.Post
	for i := range 3 {
		c, err := store.Create(t.Context(), notifier.NewPost{Author: "  hank ", Message: fmt.Sprint("post ", i)})
		if err != nil {
			t.Fatal(err)
		}
		p := c.Post
		if p.ID == 0 || p.Author != "hank" || p.CreatedAt.IsZero() || c.Delivery != notifier.DeliveryPending || c.Replayed {
			t.Fatalf("Create returned %+v", c)
		}
		created = append(created, p)
		in.expect(t, p) // delivered by the trigger and the Listener
	}
	recent, err := store.Recent(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != 2 || recent[0].ID != created[2].ID || recent[1].ID != created[1].ID {
		t.Fatalf("Recent(2) = %+v, want the last two posts, newest first", recent)
	}
	if !recent[0].CreatedAt.Equal(created[2].CreatedAt) || recent[0].Message != "post 2" {
		t.Errorf("Recent returned %+v, want %+v", recent[0], created[2])
	}
	if recent, err := store.Recent(t.Context(), 0); err != nil || len(recent) != 0 {
		t.Errorf("Recent(0) = %v, %v; want none", recent, err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	// No connection is made: pgxpool connects lazily.
	pool, err := pgxpool.New(t.Context(), "postgres://nobody@127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	layer := channellayer.NewMemory()
	for _, cfg := range []notifier.Config{
		{Bridges: []notifier.Bridge{{Table: "posts", Group: "no spaces", Type: "t"}}},
		{Bridges: []notifier.Bridge{notifier.PostsBridge(""), notifier.PostsBridge("other")}},
		{Retention: -time.Second},
		{MinBackoff: -time.Second},
		{MinBackoff: time.Minute}, // above the default maximum
		{MinBackoff: 2 * time.Second, MaxBackoff: time.Second},
		{PollInterval: -time.Second},
	} {
		if _, err := notifier.New(pool, layer, cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := notifier.New(pool, layer, notifier.Config{}); err != nil {
		t.Errorf("New with zero Config: %v", err)
	}
}

// TestRecentWaitsForListener checks that recent posts are read only once
// the Listener knows where it starts: a page that loads them after
// joining the group then misses no post committed around an instance's
// start.
func TestRecentWaitsForListener(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	l, err := notifier.New(pool, layer, notifier.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	store := notifier.NewPostgresStore(pool, l)
	p := insert(t, pool, "ana", "before the start")

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if posts, err := store.Recent(ctx, 10); err == nil {
		t.Fatalf("Recent before the Listener started: %v, want an error", posts)
	}

	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	defer func() { stop(); <-done }()
	posts, err := store.Recent(t.Context(), 10)
	if err != nil || len(posts) != 1 || posts[0].ID != p.ID {
		t.Fatalf("Recent once started: %v, %v; want the one post", posts, err)
	}
}

// TestListenerPace: with Config.Pace, each row waits until Pace returns,
// rows go on in order as it lets them, and cancelling the Listener while
// it waits stops it cleanly without sending the waiting row.
func TestListenerPace(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	asked := make(chan struct{}, 16)
	room := make(chan struct{})
	l, err := notifier.New(pool, layer, notifier.Config{Logger: testLogger(t), Pace: func(ctx context.Context) error {
		asked <- struct{}{}
		select {
		case <-room:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	waitReady(t, l, true)

	waitAsked := func() {
		t.Helper()
		select {
		case <-asked:
		case <-time.After(waitFor):
			t.Fatalf("Pace not called within %v", waitFor)
		}
		select {
		case g := <-in:
			t.Fatalf("delivered %s while Pace blocked", brief(g))
		default:
		}
	}
	posts := []notifier.Post{insert(t, pool, "paced", "1"), insert(t, pool, "paced", "2")}
	for _, p := range posts {
		waitAsked()
		room <- struct{}{}
		in.expect(t, p)
	}

	insert(t, pool, "paced", "never sent")
	waitAsked()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatalf("Run did not return within %v of its context's end", waitFor)
	}
	select {
	case g := <-in:
		t.Fatalf("delivered %s after Pace failed", brief(g))
	default:
	}
}

// TestPostgresStoreIdempotency: Creates with the same key, one after the
// other or at once, store one post and answer alike; the same key for
// another post is refused; a key is free again after
// IdempotencyLifetime, and a Listener prunes expired keys.
func TestPostgresStoreIdempotency(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	store := notifier.NewPostgresStore(pool, nil)
	np := notifier.NewPost{Author: "ann", Message: "once", IdempotencyKey: "key-1"}

	results := make([]notifier.Created, 8)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			c, err := store.Create(t.Context(), np)
			if err != nil {
				t.Error(err)
			}
			results[i] = c
		})
	}
	wg.Wait()
	replays := 0
	for _, c := range results {
		if c.Post != results[0].Post || c.Delivery != notifier.DeliveryPending {
			t.Fatalf("answers differ: %+v and %+v", c, results[0])
		}
		if c.Replayed {
			replays++
		}
	}
	if replays != len(results)-1 {
		t.Fatalf("%d of %d answers are replays, want all but one", replays, len(results))
	}
	count := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM posts").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("%d posts stored, want 1", n)
	}

	np.Message = "another"
	if _, err := store.Create(t.Context(), np); !errors.Is(err, notifier.ErrIdempotencyKeyReused) {
		t.Fatalf("same key, other post: %v, want ErrIdempotencyKeyReused", err)
	}

	// A day later the key is free again.
	if _, err := pool.Exec(t.Context(), "UPDATE herald_idempotency SET created_at = now() - interval '25 hours'"); err != nil {
		t.Fatal(err)
	}
	if c, err := store.Create(t.Context(), np); err != nil || c.Replayed || c.ID == results[0].ID {
		t.Fatalf("Create with an expired key = %+v, %v; want a new post", c, err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d posts stored, want 2", n)
	}

	// The Listener prunes the keys older than a day when it starts.
	if _, err := pool.Exec(t.Context(), "UPDATE herald_idempotency SET created_at = now() - interval '25 hours'"); err != nil {
		t.Fatal(err)
	}
	create(t, store, notifier.NewPost{Author: "ann", Message: "fresh", IdempotencyKey: "key-2"})
	startListener(t, pool, channellayer.NewMemory(), notifier.Config{})
	rows, _ := pool.Query(t.Context(), "SELECT key FROM herald_idempotency")
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(keys) != 1 || keys[0] != "key-2" {
		t.Fatalf("keys after the prune: %v (%v), want [key-2]", keys, err)
	}
}
