package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier/pgtest"
)

// The chaos soak: three instances on a Redis and a Postgres the test
// owns, WebSocket and event-stream clients that resume as herald.js does
// or never resume, one client that stops reading, publishers through the
// API and through SQL, and faults drawn from a seed. At the end, with the
// faults over and every instance ready, an oracle checks what each client
// received against the promises of docs/DELIVERY.md and docs/NOTIFIER.md.
//
// Settings, all optional:
//
//	HERALD_CHAOS_SEED      seed of the fault schedule (default random; a failing run prints it)
//	HERALD_CHAOS_DURATION  how long faults and traffic run (default 60s)
//	HERALD_CHAOS_FAULTS    comma-separated fault classes, "all", or "none"
//	                       (default chaosDefaultFaults); see chaosFaults
//	HERALD_CHAOS_REDIS     "single" (default) or "cluster": a 6-node Redis
//	                       Cluster with replicas, and its own fault classes
//	HERALD_CHAOS_REPORT    file to write the JSON summary to
//
// herald-bench chaos runs the same test for longer.

// chaosDefaultFaults are the fault classes a plain "go test" runs. Each of
// these once broke a promise, and the soak is what showed it:
//
//	redis-kill   posts delivered twice, once without an id (b, c); resyncs
//	             that name no group (resync)
//	herald-kill  a send to a group without history, applied once, reaching
//	             plain members twice (c)
//	pg-burst     healthy clients cut with 4008 by a transaction of posts (e)
//	redis-stop   a send answered 202 once delivered twice, with two ids (a);
//	             a send to a group without history, made while Redis was
//	             frozen, that plain members of one instance neither got nor
//	             were told of (c), seed 6543784342808026033 under -race
//
// The cluster classes run with HERALD_CHAOS_REDIS=cluster.
var chaosDefaultFaults = []string{
	"api-burst", "herald-kill", "herald-term", "pg-burst", "pg-restart",
	"pg-terminate", "proxy-stall", "redis-kill", "redis-stop",
}

// chaosFaults are the fault classes, by name.
var chaosFaults = map[string]string{
	"redis-kill":       "SIGKILL the Redis server, restart it empty 0.2-2 s later",
	"redis-stop":       "SIGSTOP the Redis server for 1-6 s, then SIGCONT",
	"pg-terminate":     "pg_terminate_backend every herald-notifier session",
	"pg-restart":       "crash Postgres (pg_ctl -m immediate), start it 0.2-2 s later",
	"herald-term":      "SIGTERM one instance, start it again on its address",
	"herald-kill":      "SIGKILL one instance, start it again on its address",
	"proxy-stall":      "freeze the TCP proxy in front of one resuming client for 1-6 s, then cut it",
	"pg-burst":         "commit one transaction of 1000-3000 posts",
	"api-burst":        "send 1000-3000 API messages to gossip from 8 senders at once, as fast as the API accepts them",
	"cluster-kill":     "(cluster) SIGKILL one master, restart it once a replica took over",
	"cluster-stop":     "(cluster) SIGSTOP one master for 5 s, then SIGCONT",
	"cluster-failover": "(cluster) CLUSTER FAILOVER on one replica",
}

// chaosClusterOnly are the classes that need HERALD_CHAOS_REDIS=cluster,
// and the single-Redis classes that do not apply to it.
var (
	chaosClusterOnly = []string{"cluster-kill", "cluster-stop", "cluster-failover"}
	chaosSingleOnly  = []string{"redis-kill", "redis-stop"}
)

// History groups the clients join besides gossip, and one without
// history that only plain clients join.
const (
	chaosLive = "chaos-live"
	chaosSlow = "chaos-slow" // only the client that stops reading
)

var chaosHistoryGroups = []string{"gossip", "chaos-h1", "chaos-h2"}

type chaosConfig struct {
	seed     uint64
	duration time.Duration
	faults   []string
	cluster  bool
	report   string
}

func chaosSettings(t *testing.T) chaosConfig {
	t.Helper()
	cfg := chaosConfig{seed: rand.Uint64(), duration: 60 * time.Second, faults: chaosDefaultFaults}
	if s := os.Getenv("HERALD_CHAOS_SEED"); s != "" {
		var err error
		if cfg.seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HERALD_CHAOS_SEED=%q: %v", s, err)
		}
	}
	if s := os.Getenv("HERALD_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("HERALD_CHAOS_DURATION=%q: want a positive duration", s)
		}
		cfg.duration = d
	}
	switch r := os.Getenv("HERALD_CHAOS_REDIS"); r {
	case "", "single":
	case "cluster":
		cfg.cluster = true
	default:
		t.Fatalf("HERALD_CHAOS_REDIS=%q: want single or cluster", r)
	}
	switch f := os.Getenv("HERALD_CHAOS_FAULTS"); f {
	case "":
	case "all":
		cfg.faults = nil
		for name := range chaosFaults {
			cfg.faults = append(cfg.faults, name)
		}
	case "none":
		cfg.faults = nil
	default:
		cfg.faults = nil
		for _, name := range strings.Split(f, ",") {
			name = strings.TrimSpace(name)
			if _, ok := chaosFaults[name]; !ok {
				t.Fatalf("HERALD_CHAOS_FAULTS: unknown fault class %q (know %v)", name, slices.Sorted(maps.Keys(chaosFaults)))
			}
			cfg.faults = append(cfg.faults, name)
		}
	}
	// Drop the classes that do not apply to this configuration.
	cfg.faults = slices.DeleteFunc(cfg.faults, func(f string) bool {
		if cfg.cluster {
			return slices.Contains(chaosSingleOnly, f)
		}
		return slices.Contains(chaosClusterOnly, f)
	})
	slices.Sort(cfg.faults)
	cfg.faults = slices.Compact(cfg.faults)
	cfg.report = os.Getenv("HERALD_CHAOS_REPORT")
	return cfg
}

// TestChaos is the soak. Its default fault set passes today; a failing
// run names its seed and the command that replays it.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos soak runs for a minute; skipped with -short")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		layertest.Unavailable(t, "redis-server binary", err)
	}
	cfg := chaosSettings(t)
	began := time.Now()
	env := chaosEnv(cfg)
	t.Logf("chaos: seed %d, duration %v, faults %v, redis %s", cfg.seed, cfg.duration, cfg.faults, map[bool]string{false: "single", true: "cluster"}[cfg.cluster])

	h := &chaosRun{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, 0x5eed))}
	if cfg.cluster {
		h.cluster = layertest.StartClusterWithReplicas(t, 3)
		env = append(env, "REDIS_CLUSTER_ADDRS="+strings.Join(h.cluster.Addrs(), ","))
	} else {
		h.redis = layertest.StartRedis(t)
		env = append(env, "REDIS_URL=redis://"+h.redis.Addr+"/0")
	}
	h.pg = pgtest.StartCluster(t)
	env = append(env, "DATABASE_URL="+h.pg.URL())
	h.env = env
	for range 3 {
		h.insts = append(h.insts, startHerald(t, env...))
	}
	h.all = slices.Clone(h.insts)
	for _, in := range h.insts {
		in.waitReady(t)
		h.addrs = append(h.addrs, in.addr)
	}
	h.ledger = newChaosLedger()
	h.proxy = layertest.StartProxy(t, h.addrs[0])

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	h.startClients(ctx, &wg)
	if !h.waitClientsJoined(ctx, 30*time.Second) {
		h.violations.add("setup", "", "clients did not all join their groups within 30s")
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	var pubWG sync.WaitGroup
	h.startPublishers(pubCtx, &pubWG)

	h.runFaults(cfg.duration)
	stopPub()
	pubWG.Wait()
	settled := h.settle(ctx)
	h.stoppedAt = time.Now()
	cancel()
	wg.Wait()
	h.check(settled)

	rep := h.summary(time.Since(began))
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("chaos summary:\n%s", b)
	if cfg.report != "" {
		if err := os.WriteFile(cfg.report, b, 0o644); err != nil {
			t.Errorf("writing %s: %v", cfg.report, err)
		}
	}
	if n := h.violations.count(); n > 0 {
		t.Errorf("%d promise violations (seed %d, faults %s):\n%s\nreplay: %s",
			n, cfg.seed, strings.Join(cfg.faults, ","), h.violations.String(), replayCommand(cfg))
	}
}

func faultsArg(f []string) string {
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, ",")
}

// chaosEnv is the instances' environment besides the services.
func chaosEnv(cfg chaosConfig) []string {
	hist := "gossip:50000:1h,chaos-h*:50000:1h"
	return []string{
		"HERALD_REDIS_PREFIX=herald-chaos-" + strconv.FormatUint(cfg.seed%1e6, 10),
		"HERALD_HISTORY=" + hist,
		"HERALD_PUBLIC_GROUPS=gossip,chaos-*",
		"HERALD_SHUTDOWN_TIMEOUT=3s",
		"HERALD_MAX_CONNECTIONS_PER_ADDR=1000",
		"HERALD_RATE_LIMIT=200",
		"HERALD_RATE_BURST=200",
	}
}

// chaosRun is one soak: its services, instances, clients and records.
type chaosRun struct {
	t   *testing.T
	cfg chaosConfig
	rng *rand.Rand // the fault schedule's, used by the test goroutine only

	redis   *layertest.RedisServer
	cluster *layertest.RedisCluster
	pg      *pgtest.Cluster
	proxy   *layertest.Proxy
	env     []string

	mu    sync.Mutex
	insts []*instance // replaced in place on restart
	all   []*instance // every process started, for their logs
	addrs []string    // fixed: a restarted instance keeps its address

	ledger  *chaosLedger
	clients []*chaosClient
	sql     *sqlPublisher
	api     []*apiPublisher
	slow    *apiPublisher // the stream to the client that stops reading

	faultLog   []faultRec
	violations violations
	stoppedAt  time.Time // when the clients were stopped
	excused    int       // missing messages a resync accounted for
	stallCuts  int       // times the stalled client was cut with 4008
	bursts     int       // API bursts so far
}

func (h *chaosRun) instance(i int) *instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.insts[i]
}

func (h *chaosRun) setInstance(i int, in *instance) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.insts[i] = in
	h.all = append(h.all, in)
}

// waitClientsJoined waits until every client is a member of its groups.
func (h *chaosRun) waitClientsJoined(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for _, c := range h.clients {
		for !c.joinedAll() {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return false
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
		}
	}
	return true
}

// settle waits, once the faults are over, for every instance to be ready
// and every client to have received a last marker in each of its groups.
// It returns whether everything settled within its deadline.
func (h *chaosRun) settle(ctx context.Context) bool {
	deadline := time.Now().Add(45 * time.Second)
	ok := true
	for i := range h.addrs {
		for status("http://"+h.addrs[i]+"/readyz") != http.StatusOK {
			if time.Now().After(deadline) {
				h.violations.add("settle", "", fmt.Sprintf("instance %s not ready 45s after the faults ended", h.addrs[i]))
				ok = false
				break
			}
			time.Sleep(50 * time.Millisecond) // polling readiness, bounded by deadline
		}
	}
	// The clients are connected again somewhere before the markers go out,
	// so that plain clients, which do not resume, can receive them.
	for _, c := range h.clients {
		for !c.connectedNow() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
		}
	}
	markers := h.sendMarkers(ctx)
	for _, c := range h.clients {
		if c.kind == kindStall {
			continue
		}
		for !c.hasMarkers(markers) {
			if time.Now().After(deadline) {
				h.violations.add("settle", c.name, fmt.Sprintf("did not receive the end markers %v within 45s of the faults' end", markers))
				ok = false
				break
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
		}
	}
	return ok
}
