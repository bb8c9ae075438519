package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// faultRec is one fault of the schedule, as it happened.
type faultRec struct {
	Class  string    `json:"class"`
	Detail string    `json:"detail"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
}

// runFaults injects faults for d, one at a time, each class and its
// parameters drawn from the seed, with 1-4 s of calm between them. It
// runs on the test goroutine, which may fail the test.
func (h *chaosRun) runFaults(d time.Duration) {
	end := time.Now().Add(d)
	for {
		calm := time.Duration(1000+h.rng.IntN(3000)) * time.Millisecond
		if time.Now().Add(calm).After(end) {
			time.Sleep(time.Until(end))
			return
		}
		time.Sleep(calm) // the schedule's own pace, not a wait for an event
		if len(h.cfg.faults) == 0 {
			continue
		}
		class := h.cfg.faults[h.rng.IntN(len(h.cfg.faults))]
		rec := faultRec{Class: class, Start: time.Now()}
		rec.Detail = h.inject(class)
		rec.End = time.Now()
		h.faultLog = append(h.faultLog, rec)
		h.t.Logf("chaos: %s %s (%v)", class, rec.Detail, rec.End.Sub(rec.Start).Round(time.Millisecond))
	}
}

// pause draws a duration between lo and hi milliseconds.
func (h *chaosRun) pause(lo, hi int) time.Duration {
	return time.Duration(lo+h.rng.IntN(hi-lo+1)) * time.Millisecond
}

func (h *chaosRun) inject(class string) string {
	t := h.t
	switch class {
	case "redis-kill":
		d := h.pause(200, 2000)
		h.redis.Kill()
		time.Sleep(d) // the outage itself
		h.redis.Restart()
		return fmt.Sprintf("down %v", d)
	case "redis-stop":
		d := h.pause(1000, 6000)
		h.freeze(h.redis.Addr, d)
		return fmt.Sprintf("stopped %v", d)
	case "pg-terminate":
		return fmt.Sprintf("%d sessions", h.terminateNotifiers())
	case "pg-restart":
		d := h.pause(200, 2000)
		h.pg.Crash()
		time.Sleep(d) // the outage itself
		h.pg.Start()
		return fmt.Sprintf("down %v", d)
	case "herald-term":
		i := h.rng.IntN(len(h.addrs))
		h.setInstance(i, restartHerald(t, h.instance(i), syscall.SIGTERM, h.env...))
		return "instance " + strconv.Itoa(i)
	case "herald-kill":
		i := h.rng.IntN(len(h.addrs))
		d := h.pause(0, 1000)
		in := h.instance(i)
		_ = in.cmd.Process.Kill()
		_ = in.cmd.Wait()
		time.Sleep(d) // the outage itself
		fresh := startHerald(t, append(slices.Clip(h.env), "HERALD_ADDR="+in.addr)...)
		fresh.waitReady(t)
		h.setInstance(i, fresh)
		return fmt.Sprintf("instance %d, down %v", i, d)
	case "proxy-stall":
		d := h.pause(1000, 6000)
		h.proxy.Freeze()
		time.Sleep(d) // the stall itself
		h.proxy.Thaw()
		return fmt.Sprintf("frozen %v", d)
	case "pg-burst":
		n := 1000 + h.rng.IntN(2001)
		select {
		case h.sql.bursts <- n:
		case <-time.After(10 * time.Second):
			return "publisher busy"
		}
		return fmt.Sprintf("%d rows", n)
	case "api-burst":
		n := 1000 + h.rng.IntN(2001)
		h.burst(n)
		return fmt.Sprintf("%d messages from 8 senders", n)
	case "cluster-kill":
		m := h.clusterMaster()
		h.clusterKill(m)
		return "master " + m.Addr
	case "cluster-stop":
		m := h.clusterMaster()
		h.freeze(m.Addr, 5*time.Second)
		return "master " + m.Addr
	case "cluster-failover":
		r := h.clusterReplica()
		h.clusterFailover(r)
		return "replica " + r.Addr
	}
	t.Fatalf("unknown fault class %q", class)
	return ""
}

// freeze stops the Redis server at addr with SIGSTOP for d, then lets
// it go on.
func (h *chaosRun) freeze(addr string, d time.Duration) {
	pid := redisPid(h.t, addr)
	p, err := os.FindProcess(pid)
	if err != nil {
		h.t.Fatal(err)
	}
	_ = p.Signal(syscall.SIGSTOP)
	h.t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) }) // whatever happens
	time.Sleep(d)                                         // the stall itself
	_ = p.Signal(syscall.SIGCONT)
}

// redisPid asks the server at addr for its process id.
func redisPid(t testingTB, addr string) int {
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("INFO server of %s: %v", addr, err)
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "process_id:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("INFO server of %s names no process_id", addr)
	return 0
}

type testingTB interface {
	Fatalf(string, ...any)
}

// terminateNotifiers ends every Postgres session of the instances'
// notifiers, as a DBA or a failover would.
func (h *chaosRun) terminateNotifiers() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, h.pg.URL())
	if err != nil {
		h.t.Fatalf("connecting to terminate backends: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'herald-notifier') s`).Scan(&n); err != nil {
		h.t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

// clusterNodes returns the cluster's servers by their current role.
func (h *chaosRun) clusterNodes() (masters, replicas []*layertest.RedisServer) {
	for _, n := range append(append([]*layertest.RedisServer{}, h.cluster.Nodes...), h.cluster.Replicas...) {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		role, err := c.Do(ctx, "ROLE").Slice()
		cancel()
		c.Close()
		if err != nil || len(role) == 0 {
			continue
		}
		if role[0] == "master" {
			masters = append(masters, n)
		} else {
			replicas = append(replicas, n)
		}
	}
	return masters, replicas
}

func (h *chaosRun) clusterMaster() *layertest.RedisServer {
	m, _ := h.clusterNodes()
	if len(m) == 0 {
		h.t.Fatal("no cluster master answers")
	}
	return m[h.rng.IntN(len(m))]
}

func (h *chaosRun) clusterReplica() *layertest.RedisServer {
	_, r := h.clusterNodes()
	if len(r) == 0 {
		h.t.Fatal("no cluster replica answers")
	}
	return r[h.rng.IntN(len(r))]
}

// clusterKill kills master m, waits until its replica took over, and
// starts m again, which rejoins as a replica.
func (h *chaosRun) clusterKill(m *layertest.RedisServer) {
	before, _ := h.clusterNodes()
	m.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		masters, _ := h.clusterNodes()
		if len(masters) == len(before) {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no replica took over from %s", m.Addr)
		}
		time.Sleep(100 * time.Millisecond) // polling the cluster, bounded by deadline
	}
	m.Restart()
	h.waitClusterOK()
}

// clusterFailover makes replica r take over from its master, as an
// operator's manual failover does.
func (h *chaosRun) clusterFailover(r *layertest.RedisServer) {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		h.t.Fatalf("CLUSTER FAILOVER on %s: %v", r.Addr, err)
	}
	for {
		role, err := c.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			break
		}
		if ctx.Err() != nil {
			h.t.Fatalf("%s did not take over", r.Addr)
		}
		time.Sleep(50 * time.Millisecond) // polling the role, bounded by ctx
	}
	h.waitClusterOK()
}

// waitClusterOK waits until every node says the cluster is ok again;
// the masters may have changed, so it asks all nodes.
func (h *chaosRun) waitClusterOK() {
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range append(append([]*layertest.RedisServer{}, h.cluster.Nodes...), h.cluster.Replicas...) {
		c := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1})
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := c.ClusterInfo(ctx).Result()
			cancel()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				h.t.Fatalf("cluster node %s not ok: %v", n.Addr, err)
			}
			time.Sleep(50 * time.Millisecond) // polling the cluster, bounded by deadline
		}
		c.Close()
	}
}
