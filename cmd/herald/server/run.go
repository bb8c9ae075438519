package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/cmd/internal/demo"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/router"
	"github.com/heraldhq/herald/web"
)

// Run builds the server from cfg (the channel layer, the consumers, the
// notifier or the in-memory posts, the router and the HTTP servers),
// logs to out, and serves until ctx ends; then it drains and returns nil.
// listening, if not nil, is called with the address once the server
// accepts connections. Every tool that runs the server runs it through
// Run, so that what it runs is what cmd/herald runs.
func Run(ctx context.Context, cfg *Config, out io.Writer, listening func(addr string)) error {
	apiState, err := cfg.checkAPIExposure()
	if err != nil {
		return err
	}
	log := newLogger(cfg, out)
	slog.SetDefault(log)
	redis.SetLogger(redisLogger{log})

	var (
		layer     channellayer.Layer
		layerName = "memory (one instance)"
		bg        sync.WaitGroup // background work, stopped by cancel
	)
	bgCtx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		bg.Wait()
	}()

	if cfg.channelsRedis.Mode != "" && cfg.redisOpts == nil {
		return errors.New("setting HERALD_CHANNELS_REDIS: needs REDIS_URL")
	}
	if cfg.redisOpts != nil && cfg.channelsRedis.Mode != "" {
		client := redis.NewClient(cfg.redisOpts)
		defer client.Close()
		if layer, layerName, err = newChannelsRedisLayer(cfg, client, log); err != nil {
			return err
		}
	} else if cfg.redisOpts != nil {
		client := redis.NewClient(cfg.redisOpts)
		defer client.Close()
		l, err := channellayer.NewRedis(client, channellayer.RedisConfig{Prefix: cfg.RedisPrefix, Logger: log, History: cfg.History, MaxGroups: cfg.MaxInstanceGroups})
		if err != nil {
			return fmt.Errorf("setting HERALD_REDIS_PREFIX: %w", err)
		}
		layer, layerName = l, "redis "+cfg.redisOpts.Addr
	} else if cfg.redisCluster != nil {
		client := redis.NewClusterClient(cfg.redisCluster)
		defer client.Close()
		l, err := channellayer.NewRedisCluster(client, channellayer.RedisConfig{Prefix: cfg.RedisPrefix, Logger: log, History: cfg.History, MaxGroups: cfg.MaxInstanceGroups})
		if err != nil {
			return fmt.Errorf("setting HERALD_REDIS_PREFIX: %w", err)
		}
		layer, layerName = l, fmt.Sprintf("redis cluster %v", cfg.redisCluster.Addrs)
	} else {
		l, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{History: cfg.History, HistoryMaxBytes: cfg.HistoryMaxBytes, MaxGroups: cfg.MaxInstanceGroups})
		if err != nil {
			return fmt.Errorf("setting HERALD_HISTORY: %w", err)
		}
		layer = l
	}
	defer layer.Close()
	if cfg.redisOpts != nil || cfg.redisCluster != nil {
		l := layer // layer is wrapped below
		bg.Add(1)
		go func() {
			defer bg.Done()
			sayReachable(bgCtx, l, layerName, log)
		}()
	}

	clientAddr := router.ClientAddrPrefix(cfg.TrustedProxies, cfg.IPv6Prefix)
	conns := &consumer.Server{
		Logger:         log,
		OriginPatterns: cfg.AllowedOrigins,
		QueueBytes:     cfg.QueueBytes,
		WriteDelay:     cfg.WriteDelay,
		Compression:    cfg.Compression,
		ReadLimit:      cfg.MaxFrame,

		MaxConnections:        cfg.MaxConnections,
		MaxConnectionsPerAddr: cfg.MaxConnectionsPerAddr,
		ClientAddr:            clientAddr,
		RateLimit:             cfg.RateLimit,
		RateBurst:             cfg.RateBurst,
		MaxGroups:             cfg.MaxGroups,
		PublicGroups:          cfg.PublicGroups,
		PingInterval:          cfg.PingInterval,
		PingTimeout:           cfg.PingTimeout,
		MaxReplay:             cfg.MaxReplay,
		ReplayRate:            cfg.ReplayRate,
		ReplayBurst:           cfg.ReplayBurst,
	}
	if cfg.ReplayRate == 0 {
		conns.ReplayRate = -1 // the Server's zero value is its default
	}
	if cfg.WriteDelay == 0 {
		conns.WriteDelay = -1 // the Server's zero value is its default
	}
	// Plain HTTP connections are limited at accept; one that conns admits
	// as a WebSocket or an event stream counts as conns' meanwhile.
	plain := &router.HTTPConns{
		Max:        cfg.MaxHTTPConnections,
		MaxPerAddr: cfg.MaxHTTPConnectionsPerAddr,
		Exempt:     cfg.TrustedProxies,
	}
	conns.Handoff = plain.Handoff
	metrics := router.NewMetrics(conns, layer)
	metrics.CountHTTP(plain)
	layer = metrics.Instrument(layer) // every send timed and counted
	conns.Layer = layer

	var (
		posts    notifier.Store
		listener *notifier.Listener
		dbName   = "none (posts kept in memory)"
	)
	if cfg.pgConfig != nil {
		pool, err := pgxpool.NewWithConfig(bgCtx, cfg.pgConfig)
		if err != nil {
			return fmt.Errorf("setting DATABASE_URL: %w", err)
		}
		defer pool.Close()
		bridges := append([]notifier.Bridge{notifier.PostsBridge(demo.Group)}, cfg.bridges...)
		listener, err = notifier.New(pool, layer, notifier.Config{Logger: log, Bridges: bridges, Pace: conns.WaitForRoom,
			SharedLayer: cfg.redisOpts != nil || cfg.redisCluster != nil})
		if err != nil {
			return err
		}
		posts = notifier.NewPostgresStore(pool, listener)
		dbName = fmt.Sprintf("postgres %s:%d/%s", cfg.pgConfig.ConnConfig.Host, cfg.pgConfig.ConnConfig.Port, cfg.pgConfig.ConnConfig.Database)
		bg.Add(1)
		go func() {
			defer bg.Done()
			migrateThenListen(bgCtx, pool, bridges, listener, log)
		}()
	} else {
		memPosts, err := notifier.NewMemoryStore(layer, demo.Group)
		if err != nil {
			return err
		}
		posts = memPosts
		bg.Add(1)
		go func() {
			defer bg.Done()
			_ = memPosts.Run(bgCtx) // delivers the posts kept while the layer is down
		}()
	}
	// The background work stops before the pool and the layer it sends
	// through are closed (deferred calls run last first, and theirs were
	// registered before this), so that the listener is not cut in the
	// middle of a send and left to log it as failed.
	defer func() {
		cancel()
		bg.Wait()
	}()

	rt := router.New(conns, log)
	rt.AllowedHosts = cfg.allowedHosts()
	if cfg.tokens != nil {
		cfg.tokens.Issuer, cfg.tokens.Audience = cfg.jwtIssuer, cfg.jwtAudience
		cfg.tokens.MaxLifetime = cfg.jwtMaxLifetime
		rt.Tokens = cfg.tokens
	}
	for _, r := range cfg.routes {
		rt.WebSocket(r.path, r.new)
	}
	api := &router.API{
		Layer:   layer,
		Token:   cfg.APIToken,
		MaxBody: cfg.MaxFrame,
		Logger:  log,
		Ready:   readiness(layer, listener),
	}
	if cfg.HTTPRateLimit > 0 {
		api.Limit = &router.RateLimit{
			Rate:       cfg.HTTPRateLimit,
			Burst:      cfg.HTTPRateBurst,
			Token:      cfg.APIToken,
			ClientAddr: clientAddr,
			Refused:    metrics.Refused,
		}
	}
	api.Mount(rt.HTTP())
	// The demo's posts, POST behind the same per-address buckets as /api/.
	(&demo.Posts{Store: posts, MaxBody: cfg.MaxFrame, Logger: log}).Mount(rt.HTTP(), api.Limit.Handler)
	if cfg.MetricsAddr == "" {
		// On the public address, /metrics is as open as /api/.
		rt.HTTP().Method(http.MethodGet, "/metrics", router.RequireToken(cfg.APIToken, metrics.Handler()))
	}
	// The page's own paths only: any other path gets the router's JSON
	// 404 (or 426 on a WebSocket route), a wrong method its 405 with Allow.
	for _, p := range []string{"/", "/static/*"} {
		rt.HTTP().Method(http.MethodGet, p, web.Handler())
		rt.HTTP().Method(http.MethodHead, p, web.Handler())
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("setting HERALD_ADDR (-addr): %w", err)
	}
	metricsAt := "main address"
	var msrv *http.Server
	if cfg.MetricsAddr != "" {
		// Its own listener, for the monitoring network only: no token,
		// no connection limits.
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("setting HERALD_METRICS_ADDR (-metrics-addr): %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		msrv = newHTTPServer(cfg, mux, log)
		go func() { _ = msrv.Serve(mln) }()
		metricsAt = mln.Addr().String()
	}
	srv := newHTTPServer(cfg, rt, log)
	srv.ConnContext, srv.ConnState = plain.ConnContext, plain.ConnState
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(plain.Listener(ln)) }()
	addr := ln.Addr().String()
	hosts := "any"
	if rt.AllowedHosts != nil {
		hosts = strings.Join(rt.AllowedHosts, ",")
	}
	log.Info(fmt.Sprintf("herald listening: open http://%s/ in a browser", addr),
		"addr", addr, "layer", layerName, "database", dbName, "api", apiState, "api_token", cfg.APIToken != "",
		"client_tokens", cfg.tokens != nil, "allowed_hosts", hosts, "metrics", metricsAt)
	if cfg.APIToken == "" && !router.IsLoopbackAddr(cfg.Addr) {
		log.Warn("herald: the API is open: anyone who can reach "+addr+" may send to every group through /api/ "+
			"(HERALD_API_INSECURE=true); set HERALD_API_TOKEN to protect it", "addr", addr)
	}
	warnFileLimit(cfg, log)
	if listening != nil {
		listening(addr)
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}
	log.Info("herald shutting down: telling clients to reconnect elsewhere", "timeout", cfg.ShutdownTimeout)
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	// Stop accepting first, then close the WebSockets, which
	// http.Server.Shutdown does not track once hijacked.
	// Close the consumers' connections first: event streams are plain
	// requests, which http.Server.Shutdown would wait for.
	_ = ln.Close()
	cerr := conns.Shutdown(sctx)
	herr := srv.Shutdown(sctx)
	var merr error
	if msrv != nil {
		merr = msrv.Shutdown(sctx)
	}
	if err := errors.Join(herr, cerr, merr); err != nil {
		log.Warn("herald: shutdown deadline passed with work left", "err", err)
	}
	log.Info("herald stopped")
	return nil
}

// newHTTPServer returns a server for h with the plain HTTP timeouts.
// WebSockets and event streams are not bound by them: hijacking clears
// the deadlines, and consumer.Server clears the read deadline of the
// requests it admits and bounds each write itself.
func newHTTPServer(cfg *Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		// Also the wait for the first bytes of a kept-alive connection's
		// next request: without it, a client that sends three bytes of
		// one (the server waits for four) holds the connection for ever.
		IdleTimeout: cfg.IdleTimeout,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// migrateThenListen creates the posts table, the log and the bridges'
// triggers, retrying while Postgres is unreachable (or a bridged table
// missing), then runs the listener until ctx ends.
func migrateThenListen(ctx context.Context, pool *pgxpool.Pool, bridges []notifier.Bridge, l *notifier.Listener, log *slog.Logger) {
	backoff := 250 * time.Millisecond
	for {
		err := notifier.Migrate(ctx, pool, bridges...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("herald: preparing the posts table failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	_ = l.Run(ctx)
}

// readiness reports the instance ready when the layer can send and, with
// a database, the listener is listening.
func readiness(layer channellayer.Layer, l *notifier.Listener) func(context.Context) error {
	return func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := layer.Check(cctx); err != nil {
			return &router.NotReady{Reason: "channel layer unreachable", Err: err}
		}
		if l != nil && !l.Ready() {
			return &router.NotReady{Reason: "database unreachable, or posts waiting for the channel layer",
				Err: errors.New("notifier: not listening to Postgres, or holding posts until the channel layer takes them")}
		}
		return nil
	}
}

// sayReachable logs, once, whether the channel layer answers within its
// first few seconds. A server whose Redis is down or mistyped still
// serves, and the layer connects when it can, so without this line the
// start-up log would look healthy; /readyz reports it meanwhile.
func sayReachable(ctx context.Context, c channellayer.Layer, name string, log *slog.Logger) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Check(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			log.Info("herald: channel layer reachable", "layer", name)
			return
		case time.Now().After(deadline):
			log.Warn("herald: channel layer not reachable yet; serving, and connecting when it can "+
				"(until then sends answer 503 and /readyz unavailable)", "layer", name, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// redisLogger sends go-redis' own messages (dial failures while Redis is
// down, mostly) to the server's log, at debug level: the channel layer
// already reports outages and recoveries once each.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

func newLogger(cfg *Config, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: maskAttr}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}
