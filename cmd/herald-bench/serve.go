package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/cmd/herald/server"
)

// serveSettings are the settings in which a profiled server differs
// from herald's defaults, applied unless the environment or a flag says
// otherwise: a load run opens thousands of connections and publishes
// hundreds of requests a second from one loopback address, which the
// per-address limits are there to refuse.
var serveSettings = map[string]string{
	"HERALD_ADDR":                     "127.0.0.1:18200",
	"HERALD_REDIS_PREFIX":             "herald-bench",
	"HERALD_LOG_LEVEL":                "warn",
	"HERALD_MAX_CONNECTIONS":          "20000",
	"HERALD_MAX_CONNECTIONS_PER_ADDR": "20000",
	"HERALD_HTTP_RATE_LIMIT":          "0",
}

// runServe runs the Herald server in this process, built by
// server.Run from herald's own settings (flags, environment, and
// serveSettings in place of some defaults), so that a load run against
// it yields CPU and heap profiles: the herald binary has no profiling
// endpoint.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	cpuProf := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memProf := fs.String("memprofile", "", "write a heap profile here (after a GC) on SIGUSR1, and at the end if no SIGUSR1 came")
	maxTime := fs.Duration("max-time", 5*time.Minute, "stop after this long")
	fs.Usage = func() { serveUsage(fs) }
	cfg, err := server.ParseFlags(fs, args, func(k string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return serveSettings[k]
	})
	if err != nil {
		return err
	}
	if host, _, _ := net.SplitHostPort(cfg.Addr); !isLoopback(host) {
		return fmt.Errorf("-addr: %q is not a loopback address", cfg.Addr)
	}
	if opts, err := redis.ParseURL(cfg.RedisURL); err == nil { // Parse has refused a bad one
		if host, _, _ := net.SplitHostPort(opts.Addr); !isLoopback(host) {
			return fmt.Errorf("-redis-url: %q is not a loopback address", opts.Addr)
		}
	}
	if *cpuProf != "" {
		stop, err := startCPUProfile(*cpuProf)
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		served <- server.Run(ctx, cfg, os.Stderr, func(addr string) {
			fmt.Fprintf(os.Stderr, "herald-bench serve: listening on %s, pid %d\n", addr, os.Getpid())
		})
	}()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	wroteHeap := false
	for {
		select {
		case err := <-served:
			if err == nil && *memProf != "" && !wroteHeap {
				err = writeHeap(*memProf)
			}
			return err
		case <-usr1:
			if *memProf != "" {
				if err := writeHeap(*memProf); err != nil {
					return err
				}
				wroteHeap = true
				fmt.Fprintf(os.Stderr, "herald-bench serve: heap profile written to %s\n", *memProf)
			}
		}
	}
}

func serveUsage(fs *flag.FlagSet) {
	fmt.Fprint(fs.Output(), `usage: herald-bench serve [flags]

Runs the Herald server that cmd/herald runs (package cmd/herald/server),
with its settings as flags or environment variables, in this process, and
profiles it. Unless set, these settings differ from herald's defaults:
`)
	keys := slices.Sorted(maps.Keys(serveSettings))
	for _, k := range keys {
		fmt.Fprintf(fs.Output(), "  %s=%s\n", k, serveSettings[k])
	}
	fmt.Fprintln(fs.Output(), "\nflags (-cpuprofile, -memprofile and -max-time are the tool's, the rest herald's):")
	fs.PrintDefaults()
}

// writeHeap writes a heap profile of the live objects to path.
func writeHeap(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("heap").WriteTo(f, 0)
}

// startCPUProfile profiles this process's CPU into the file at path until
// stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
