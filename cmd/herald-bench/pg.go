package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

func getenv(k string) string { return os.Getenv(k) }

// orEnv returns the environment variable k, or def if it is unset or
// empty.
func orEnv(k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

// runPG measures Postgres to browser: rows inserted into posts, each
// carrying the time just before its INSERT, received by every client.
// Each INSERT is its own transaction, so the latency reported runs from
// before the INSERT to the frame; the INSERT's own round trip (commit
// included) is reported beside it.
func runPG(args []string) error {
	fs := flag.NewFlagSet("pg", flag.ContinueOnError)
	var c common
	c.register(fs)
	clients := fs.Int("clients", 1000, "connected clients")
	inserts := fs.Int("inserts", 500, "rows to insert")
	rate := fs.Float64("rate", 50, "inserts per second")
	dbURL := fs.String("database-url", getenv("DATABASE_URL"), "Postgres the server listens to (default $DATABASE_URL)")
	grace := fs.Duration("grace", 10*time.Second, "longest wait for deliveries after the last insert")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *clients <= 0 || *clients > 200000:
		return fmt.Errorf("-clients: want 1 to 200000")
	case *inserts <= 0 || *inserts > 100000:
		return fmt.Errorf("-inserts: want 1 to 100000")
	case *rate <= 0 || *rate > 10000:
		return fmt.Errorf("-rate: want more than 0, at most 10000")
	case *dbURL == "":
		return fmt.Errorf("-database-url (or DATABASE_URL) is required")
	}
	if err := c.check(*clients); err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(*dbURL)
	if err != nil {
		return fmt.Errorf("-database-url: %w", err)
	}
	if !isLoopback(cfg.Host) && cfg.Host[0] != '/' {
		return fmt.Errorf("-database-url: %q is not a loopback address", cfg.Host)
	}
	ctx := context.Background()
	db, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close(ctx)

	fl, err := spawn(fleetConfig{n: *clients, procs: c.procs, urls: c.wsURLs, srcs: c.srcs(*clients), conc: c.conc,
		timeout: c.timeout, reader: c.reader, maxTime: c.connLimit + time.Duration(float64(*inserts) / *rate * float64(time.Second)) + *grace + time.Minute})
	if err != nil {
		return err
	}
	defer fl.kill()
	evs, err := fl.connect(c.connLimit)
	if err != nil {
		fl.stop()
		return err
	}
	cs := sumConnect(evs)

	cpu0, _ := c.servers.cpu()
	var ins hist
	okN := 0
	start := time.Now()
	for i := 0; i < *inserts; i++ {
		if d := time.Until(start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))); d > 0 {
			time.Sleep(d) // pacing the inserts
		}
		t0 := time.Now()
		msg := "@t=" + strconv.FormatInt(t0.UnixNano(), 10) + " s=" + strconv.Itoa(i)
		if _, err := db.Exec(ctx, "INSERT INTO posts (author, message) VALUES ($1, $2)", "herald-bench", msg); err != nil {
			fl.stop()
			return fmt.Errorf("insert: %w", err)
		}
		ins.Record(time.Since(t0))
		okN++
	}
	want := uint64(okN) * uint64(cs.ok)
	deadline := time.Now().Add(*grace)
	tick := time.NewTicker(50 * time.Millisecond)
	for now := range tick.C {
		if recv, _ := fl.progress(); recv >= want || now.After(deadline) {
			break
		}
	}
	tick.Stop()
	cpu1, _ := c.servers.cpu()
	ds := sumDone(fl.stop())
	lat, recv, closed := ds.lat, ds.recv, ds.closed
	var im merged
	im.Add(ins.Data())
	l, il := lat.Summary(), im.Summary()
	loss := 0.0
	if want > 0 && recv < want {
		loss = float64(want-recv) / float64(want)
	}
	rec := map[string]any{
		"scenario": "pg", "clients": *clients, "connected": cs.ok, "connect_failed": cs.failed,
		"inserts": okN, "rate_asked": *rate, "expected": want, "received": recv, "loss": round(loss, 6),
		"latency": l, "insert": il, "closed_by_server": closed, "server_cpu_s": round(cpu1-cpu0, 2),
	}
	summary := fmt.Sprintf("pg: %d clients, %d inserts at %.0f/s: received %d of %d (loss %.4f%%), INSERT-to-frame p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms (INSERT round trip p50 %.1fms p99 %.1fms)",
		cs.ok, okN, *rate, recv, want, loss*100, l.P50, l.P90, l.P99, l.MaxMS, il.P50, il.P99)
	return c.report(summary, rec)
}
