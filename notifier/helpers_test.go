package notifier_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/notifier/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// waitFor bounds every wait for an event.
const waitFor = 15 * time.Second

// gossip is a received post announcement. Decoding it with unknown fields
// disallowed proves the message carries exactly these.
type gossip struct {
	Type    string `json:"type"`
	Event   string `json:"event"`
	Sender  string `json:"sender"`
	Message string `json:"message"`
	ID      int64  `json:"id"`
	// HeraldID is the group history's id, which the layer adds to groups
	// that keep a history (gossip does by default).
	HeraldID string `json:"herald_id,omitempty"`
	// HeraldGroup names the group the id belongs to.
	HeraldGroup string `json:"herald_group,omitempty"`
}

// inbox collects what a member of the "gossip" group receives.
type inbox chan gossip

// join registers a member in layer's "gossip" group and returns what it
// receives.
func join(t *testing.T, layer channellayer.Layer) inbox {
	t.Helper()
	in := make(inbox, 1<<15) // room for the bursts
	member := groups.MemberFunc(func(msgType string, data []byte) {
		var g gossip
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&g); err != nil || msgType != g.Type {
			t.Errorf("member got type %q, undecodable message %s: %v", msgType, data, err)
			return
		}
		g.HeraldID, g.HeraldGroup = "", "" // the layer's, not the notifier's: compared elsewhere
		select {
		case in <- g:
		default:
			t.Errorf("inbox full, dropped %s", data) // Deliver must not block
		}
	})
	ch, err := layer.NewChannel(member)
	if err != nil {
		t.Fatal(err)
	}
	if err := layer.GroupAdd(t.Context(), notifier.DefaultGroup, ch); err != nil {
		t.Fatal(err)
	}
	return in
}

// next returns the next message or fails the test after waitFor.
func (in inbox) next(t *testing.T) gossip {
	t.Helper()
	select {
	case g := <-in:
		return g
	case <-time.After(waitFor):
		t.Fatalf("no message within %v", waitFor)
		return gossip{}
	}
}

// expect checks that the next message announces p.
func (in inbox) expect(t *testing.T, p notifier.Post) {
	t.Helper()
	got := in.next(t)
	want := gossip{Type: "name.gossip", Event: "New Post", Sender: p.Author, Message: p.Message, ID: p.ID}
	if got != want {
		t.Fatalf("got message %s, want %s", brief(got), brief(want))
	}
}

func brief(g gossip) string {
	if len(g.Message) > 60 {
		g.Message = g.Message[:60] + "..."
	}
	b, _ := json.Marshal(g)
	return string(b)
}

// joinRaw registers a member in group and returns the messages it
// receives, as sent.
func joinRaw(t *testing.T, layer channellayer.Layer, group string) chan []byte {
	t.Helper()
	in := make(chan []byte, 1024)
	member := groups.MemberFunc(func(_ string, data []byte) {
		select {
		case in <- data:
		default:
			t.Errorf("inbox full, dropped %s", data)
		}
	})
	ch, err := layer.NewChannel(member)
	if err != nil {
		t.Fatal(err)
	}
	if err := layer.GroupAdd(t.Context(), group, ch); err != nil {
		t.Fatal(err)
	}
	return in
}

// expectAll checks that the next messages announce want, in order, and
// that nothing else follows: a sentinel post is inserted through db and
// must be the very next message.
func (in inbox) expectAll(t *testing.T, db querier, want []notifier.Post) {
	t.Helper()
	for i, p := range want {
		got := in.next(t)
		if got.ID != p.ID || got.Message != p.Message || got.Sender != p.Author {
			t.Fatalf("message %d of %d: got %s, want %s", i, len(want), brief(got), brief(gossip{Type: "name.gossip", Event: "New Post", Sender: p.Author, Message: p.Message, ID: p.ID}))
		}
	}
	// Anything missing would have failed above; anything delivered twice
	// or out of place would come before the sentinel.
	in.expect(t, insert(t, db, "sentinel", "sentinel"))
}

// newPool returns a pool on a fresh database, migrated unless told not to.
func newPool(t *testing.T, migrate bool) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if migrate {
		if err := notifier.Migrate(t.Context(), pool); err != nil {
			t.Fatal(err)
		}
	}
	return pool
}

// testLogger writes to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startListener runs a Listener until the test ends and waits until it is
// ready.
func startListener(t *testing.T, pool *pgxpool.Pool, layer channellayer.Layer, cfg notifier.Config) *notifier.Listener {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := notifier.New(pool, layer, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	waitReady(t, l, true)
	return l
}

// waitReady polls until l.Ready() is want.
func waitReady(t *testing.T, l *notifier.Listener, want bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for l.Ready() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Ready() still %v after %v", !want, waitFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// querier is a pool, a connection or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// insert adds a post with plain SQL, as any writer could.
func insert(t *testing.T, db querier, author, message string) notifier.Post {
	t.Helper()
	p := notifier.Post{Author: author, Message: message}
	err := db.QueryRow(t.Context(), "INSERT INTO posts (author, message) VALUES ($1, $2) RETURNING id, created_at",
		author, message).Scan(&p.ID, &p.CreatedAt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
