package notifier_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/notifier"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Wiring the notifier into a server: migrate once at start, run one
// Listener per instance until shutdown, and create posts through a store.
func ExampleListener() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	pool, err := pgxpool.New(ctx, "postgres://herald@db/herald")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := notifier.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}

	layer := channellayer.NewMemory()
	l, err := notifier.New(pool, layer, notifier.Config{})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	// The HTTP API writes through the store; the trigger and every
	// instance's Listener deliver.
	store := notifier.NewPostgresStore(pool, nil)
	if _, err := store.Create(ctx, notifier.NewPost{Author: "ann", Message: "hello"}); err != nil {
		log.Print(err)
	}

	<-ctx.Done()
	<-done // Run returns once ctx is done
}

// Bridging another table: every row inserted into orders, by any writer,
// reaches the members of group "orders" as
// {"type":"order.created","customer":...,"id":...,"total":...}.
func ExampleBridge() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://herald@db/shop")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	bridges := []notifier.Bridge{
		notifier.PostsBridge(""), // posts to "gossip", as by default
		{
			Table:  "orders",
			Group:  "orders",
			Type:   "order.created",
			Fields: map[string]string{"id": "id", "total": "total", "customer": "customer_id"},
		},
	}
	// The same list goes to Migrate, which installs the triggers, and to
	// every instance's Listener.
	if err := notifier.Migrate(ctx, pool, bridges...); err != nil {
		log.Fatal(err)
	}
	l, err := notifier.New(pool, channellayer.NewMemory(), notifier.Config{Bridges: bridges})
	if err != nil {
		log.Fatal(err)
	}
	_ = l.Run(ctx)
}
