package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/cmd/internal/demo"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/router"
)

// runServe runs Herald's WebSocket and API paths in this process, wired
// as cmd/herald wires them (instrumented layer, /notifications/, the
// group send API, /metrics), so that a load run against it yields CPU
// and heap profiles: the herald binary has no profiling endpoint.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:18200", "address to listen on (loopback)")
	redisURL := fs.String("redis-url", "", "Redis for the layer (default: memory layer)")
	prefix := fs.String("redis-prefix", "herald-bench", "prefix of the Redis channels")
	cpuProf := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	memProf := fs.String("memprofile", "", "write a heap profile here (after a GC) on SIGUSR1, and at the end if no SIGUSR1 came")
	maxTime := fs.Duration("max-time", 5*time.Minute, "stop after this long")
	writeDelay := fs.Duration("write-delay", 0, "consumer.Server.WriteDelay (0: the server's default; negative: never wait)")
	if err := parse(fs, args); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(*addr)
	if !isLoopback(host) {
		return fmt.Errorf("-addr: %q is not a loopback address", *addr)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var layer channellayer.Layer
	if *redisURL != "" {
		l, closeRedis, err := openRedis(*redisURL, channellayer.RedisConfig{Prefix: *prefix, Logger: log})
		if err != nil {
			return err
		}
		defer closeRedis()
		layer = l
	} else {
		layer = channellayer.NewMemory()
		defer layer.Close()
	}
	conns := &consumer.Server{Logger: log, PublicGroups: []string{demo.Group}, MaxConnections: 20000, MaxConnectionsPerAddr: 20000}
	conns.WriteDelay = *writeDelay
	metrics := router.NewMetrics(conns, layer)
	layer = metrics.Instrument(layer)
	conns.Layer = layer
	rt := router.New(conns, log)
	ctor, err := consumer.NewForwarder(demo.Forwarder())
	if err != nil {
		return err
	}
	rt.WebSocket(demo.Path, ctor)
	(&router.API{Layer: layer, Logger: log}).Mount(rt.HTTP())
	rt.HTTP().Method(http.MethodGet, "/metrics", metrics.Handler())

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if *cpuProf != "" {
		stop, err := startCPUProfile(*cpuProf)
		if err != nil {
			return err
		}
		defer stop()
	}
	srv := &http.Server{Handler: rt, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "herald-bench serve: listening on %s, pid %d\n", ln.Addr(), os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	wroteHeap := false
	end := time.After(*maxTime)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-end:
			break wait
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
	if *memProf != "" && !wroteHeap {
		if err := writeHeap(*memProf); err != nil {
			return err
		}
	}
	_ = ln.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = conns.Shutdown(sctx)
	return srv.Shutdown(sctx)
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
