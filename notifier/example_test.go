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
	store := notifier.NewPostgresStore(pool)
	if _, err := store.Create(ctx, "ann", "hello"); err != nil {
		log.Print(err)
	}

	<-ctx.Done()
	<-done // Run returns once ctx is done
}
