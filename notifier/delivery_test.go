package notifier_test

import (
	"context"
	"encoding/json"
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

// fastRetry reconnects quickly, for tests that cut the connection.
var fastRetry = notifier.Config{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

// terminateListener ends the Listener's backend the way an operator or a
// failover would, and reports whether there was one to end.
func terminateListener(ctx context.Context, db querier) (bool, error) {
	var killed bool
	err := db.QueryRow(ctx, `SELECT coalesce(bool_or(pg_terminate_backend(pid)), false) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'herald-notifier'`).Scan(&killed)
	return killed, err
}

// TestListenerLateCommits commits rows out of id order: live, while the
// Listener is away, and across its catch-up. Clients get them in commit
// order, each once.
func TestListenerLateCommits(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	l := startListener(t, pool, layer, fastRetry)

	begin := func() pgx.Tx {
		tx, err := pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(context.Background()) })
		return tx
	}
	commit := func(tx pgx.Tx) {
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	var want []notifier.Post

	// Live: the smaller id commits last.
	early := begin()
	p1 := insert(t, early, "late", "small id, committed last")
	want = append(want, insert(t, pool, "late", "larger id, committed first"))
	commit(early)
	want = append(want, p1)

	// Away: a transaction that took its id before the Listener lost its
	// connection commits while it is gone, after larger ids were
	// delivered. A reader of "id > last" would never see it.
	away := begin()
	p2 := insert(t, away, "late", "id taken before the outage")
	want = append(want, insert(t, pool, "late", "delivered before the outage"))
	in.expectAll(t, pool, want)
	want = nil

	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var db string
	if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	// A database cannot refuse connections on its own behalf.
	admin, err := pgx.Connect(t.Context(), pgtest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	setAllow := func(allow bool) {
		if _, err := admin.Exec(t.Context(), fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", pgx.Identifier{db}.Sanitize(), allow)); err != nil {
			t.Fatal(err)
		}
	}
	// ALLOW_CONNECTIONS is checked at connection time, so the pool's
	// open connections (the test's transactions) keep working.
	straddle := begin()
	setAllow(false)
	if killed, err := terminateListener(t.Context(), conn); err != nil || !killed {
		t.Fatalf("terminate listener: %v, %v", killed, err)
	}
	waitReady(t, l, false)
	p3 := insert(t, straddle, "late", "id taken while away, committed after the catch-up")
	for i := range 3 {
		want = append(want, insert(t, conn, "late", fmt.Sprint("while away ", i)))
	}
	commit(away)
	want = append(want, p2)
	setAllow(true)
	waitReady(t, l, true)
	want = append(want, insert(t, conn, "late", "after the catch-up"))
	commit(straddle)
	want = append(want, p3)
	in.expectAll(t, conn, want)
}

// TestListenerTerminatedWhileInserting cuts the Listener's connection
// again and again while a writer commits posts one by one.
func TestListenerTerminatedWhileInserting(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	l := startListener(t, pool, layer, fastRetry)

	const n = 1500
	var (
		mu        sync.Mutex
		committed []notifier.Post
	)
	writerDone := make(chan error, 1)
	go func() {
		for i := range n {
			p := notifier.Post{Author: "writer", Message: fmt.Sprint("post ", i)}
			err := pool.QueryRow(context.Background(), "INSERT INTO posts (author, message) VALUES ($1, $2) RETURNING id",
				p.Author, p.Message).Scan(&p.ID)
			if err != nil {
				writerDone <- err
				return
			}
			mu.Lock()
			committed = append(committed, p)
			mu.Unlock()
		}
		writerDone <- nil
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(committed) }

	// Terminate at several points of the burst, each time once the
	// Listener is back and more posts were committed.
	for cut := range 5 {
		deadline := time.Now().Add(waitFor)
		for count() < (cut+1)*n/7 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		waitReady(t, l, true)
		if _, err := terminateListener(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	in.expectAll(t, pool, committed)
}

// TestListenerBursts: many rows in one transaction and many transactions
// of one row each arrive complete and in commit order.
func TestListenerBursts(t *testing.T) {
	t.Parallel()
	const n = 10000
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	startListener(t, pool, layer, notifier.Config{})

	t.Run("one transaction", func(t *testing.T) {
		var want []notifier.Post
		err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
			rows, _ := tx.Query(t.Context(), `INSERT INTO posts (author, message)
				SELECT 'bulk', 'row ' || i FROM generate_series(1, $1) i RETURNING id, author, message`, n)
			var err error
			want, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (notifier.Post, error) {
				var p notifier.Post
				return p, r.Scan(&p.ID, &p.Author, &p.Message)
			})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		in.expectAll(t, pool, want)
	})
	t.Run("one transaction each", func(t *testing.T) {
		conn, err := pool.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		// Sent as one pipeline of autocommitted statements, so the
		// commits come faster than the Listener reads.
		batch := &pgx.Batch{}
		for i := range n {
			batch.Queue("INSERT INTO posts (author, message) VALUES ('single', $1) RETURNING id", fmt.Sprint("tx ", i))
		}
		want := make([]notifier.Post, n)
		br := conn.SendBatch(t.Context(), batch)
		for i := range n {
			want[i] = notifier.Post{Author: "single", Message: fmt.Sprint("tx ", i)}
			if err := br.QueryRow().Scan(&want[i].ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		in.expectAll(t, conn, want)
	})
}

// TestListenerPostgresRestart runs a private server: down when the
// Listener starts, then crashed and restarted while posts are written.
func TestListenerPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := newCluster(t)
	pg.crash() // down at start
	pool, err := pgxpool.New(t.Context(), pg.url())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	layer := channellayer.NewMemory()
	in := join(t, layer)
	cfg := fastRetry
	cfg.Logger = testLogger(t)
	l, err := notifier.New(pool, layer, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()

	if l.Ready() {
		t.Fatal("Ready() with the server down")
	}
	pg.start()
	if err := notifier.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	waitReady(t, l, true)
	var want []notifier.Post
	for i := range 20 {
		want = append(want, insert(t, pool, "pg", fmt.Sprint("before ", i)))
	}

	// A transaction open across the crash is lost with it; its post was
	// never committed and must never arrive.
	doomed, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	insert(t, doomed, "pg", "never committed")
	pg.crash()
	waitReady(t, l, false)
	doomed.Rollback(context.Background())
	pg.start()
	// Posts written as soon as the server is back race the Listener's
	// reconnect: some are caught up, some arrive live.
	for i := range 20 {
		want = append(want, insert(t, pool, "pg", fmt.Sprint("after ", i)))
	}
	waitReady(t, l, true)
	in.expectAll(t, pool, want)
}

// orderMsg is an order.created message of the orders bridge below.
type orderMsg struct {
	Type     string  `json:"type"`
	ID       int64   `json:"id"`
	Total    float64 `json:"total"`
	Customer string  `json:"customer"`
}

func TestBridgeOtherTable(t *testing.T) {
	t.Parallel()
	pool := newPool(t, false)
	if _, err := pool.Exec(t.Context(), `CREATE TABLE orders (
		id bigserial PRIMARY KEY, customer_id text NOT NULL, total numeric NOT NULL, secret text)`); err != nil {
		t.Fatal(err)
	}
	bridges, err := notifier.ParseBridges("orders:orders:order.created:id+total+customer=customer_id")
	if err != nil {
		t.Fatal(err)
	}
	bridges = append(bridges, notifier.PostsBridge(""))
	for range 2 { // idempotent
		if err := notifier.Migrate(t.Context(), pool, bridges...); err != nil {
			t.Fatal(err)
		}
	}
	layer := channellayer.NewMemory()
	orders := joinRaw(t, layer, "orders")
	posts := join(t, layer)
	startListener(t, pool, layer, notifier.Config{Bridges: bridges})

	var want []orderMsg
	var wantPosts []notifier.Post
	for i := range 5 {
		o := orderMsg{Type: "order.created", Total: float64(i) + 0.5, Customer: fmt.Sprint("c", i)}
		err := pool.QueryRow(t.Context(), "INSERT INTO orders (customer_id, total, secret) VALUES ($1, $2, 'hidden') RETURNING id",
			o.Customer, o.Total).Scan(&o.ID)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, o)
		wantPosts = append(wantPosts, insert(t, pool, "shop", fmt.Sprint("order ", i)))
	}
	for _, w := range want {
		var data []byte
		select {
		case data = <-orders:
		case <-time.After(waitFor):
			t.Fatal("no order message")
		}
		var got orderMsg
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields() // the secret column is not a field
		if err := dec.Decode(&got); err != nil || got != w {
			t.Fatalf("got %s (%v), want %+v", data, err, w)
		}
	}
	posts.expectAll(t, pool, wantPosts)
	select {
	case data := <-orders:
		t.Fatalf("extra order message %s", data)
	default:
	}
}

func TestBridgeRejectsBadTables(t *testing.T) {
	t.Parallel()
	pool := newPool(t, false)
	for _, table := range []string{
		"", "Orders", "orders; DROP TABLE posts", `orders"`, "a.b.c", ".orders", "1orders",
		"orders--", strings.Repeat("a", 64), "ordérs",
	} {
		b := notifier.Bridge{Table: table, Group: "g", Type: "t"}
		if err := notifier.Migrate(t.Context(), pool, b); !errors.Is(err, notifier.ErrInvalidBridge) {
			t.Errorf("Migrate with table %q: %v, want ErrInvalidBridge", table, err)
		}
		if _, err := notifier.New(pool, channellayer.NewMemory(), notifier.Config{Bridges: []notifier.Bridge{b}}); err == nil {
			t.Errorf("New accepted table %q", table)
		}
	}
	// A table that does not exist is reported, and nothing is half done.
	if err := notifier.Migrate(t.Context(), pool, notifier.Bridge{Table: "public.missing", Group: "g", Type: "t"}); err == nil ||
		!strings.Contains(err.Error(), "missing") {
		t.Errorf("Migrate with a missing table: %v", err)
	}
	var exists bool
	if err := pool.QueryRow(t.Context(), "SELECT to_regclass('herald_log') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Errorf("a failed migration left the log behind (%v, %v)", exists, err)
	}
}

func TestParseBridges(t *testing.T) {
	got, err := notifier.ParseBridges(" orders:orders:order.created , shop.refunds:refunds:refund.issued:id+amount+customer=customer_id")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Table != "orders" || got[0].Group != "orders" || got[0].Type != "order.created" || got[0].Fields != nil ||
		got[1].Table != "shop.refunds" || len(got[1].Fields) != 3 || got[1].Fields["customer"] != "customer_id" || got[1].Fields["id"] != "id" {
		t.Fatalf("ParseBridges = %+v", got)
	}
	if got, err := notifier.ParseBridges(""); got != nil || err != nil {
		t.Errorf(`ParseBridges("") = %v, %v`, got, err)
	}
	for _, bad := range []string{
		"orders", "orders:orders", "orders:orders:", "orders:bad group:t", "Orders:o:t", "o:o:t:a=", "o:o:t:type=kind",
		"o:o:t:a+a", "o:o:t,o:p:u", "o:o:t:x:y",
	} {
		if _, err := notifier.ParseBridges(bad); !errors.Is(err, notifier.ErrInvalidBridge) {
			t.Errorf("ParseBridges(%q) = %v, want ErrInvalidBridge", bad, err)
		}
	}
}

func TestListenerPrunesTheLog(t *testing.T) {
	t.Parallel()
	pool := newPool(t, true)
	layer := channellayer.NewMemory()
	in := join(t, layer)
	cfg := fastRetry
	cfg.Retention = time.Millisecond
	cfg.PollInterval = 5 * time.Millisecond
	l := startListener(t, pool, layer, cfg)

	var want []notifier.Post
	for i := range 5 {
		want = append(want, insert(t, pool, "old", fmt.Sprint(i)))
	}
	in.expectAll(t, pool, want)
	deadline := time.Now().Add(waitFor)
	for {
		var left, pruned int64
		err := pool.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM herald_log), pruned_through FROM herald_log_state").Scan(&left, &pruned)
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 && pruned >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log still holds %d rows, pruned through %d", left, pruned)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Pruning does not confuse a Listener that is caught up.
	in.expectAll(t, pool, nil)
	if !l.Ready() {
		t.Error("not ready after pruning")
	}
}
