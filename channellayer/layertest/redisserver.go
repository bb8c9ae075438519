package layertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds the wait for a server the test started to answer,
// and for a cluster to agree on its state.
const startTimeout = 20 * time.Second

// RedisServer is a redis-server process owned by one test, on a free
// loopback port, keeping nothing on disk but its cluster configuration.
// It is stopped when the test ends.
type RedisServer struct {
	// Addr is host:port of the server, the same across restarts.
	Addr string

	t    testing.TB
	args []string
	dir  string

	mu    sync.Mutex
	cmd   *exec.Cmd
	exit  chan struct{}
	count int // starts so far, to name the log files
}

// StartRedis starts a private redis-server for t, with extra arguments
// appended to its command line. It skips t (see Unavailable) when the
// redis-server binary is missing.
func StartRedis(t testing.TB, extra ...string) *RedisServer {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("layertest: no free loopback port: %v", err)
	}
	return startRedisOn(t, port, extra...)
}

func startRedisOn(t testing.TB, port int, extra ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		Unavailable(t, "redis-server binary", err)
	}
	s := &RedisServer{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		t:    t,
		dir:  t.TempDir(),
	}
	s.args = append([]string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--maxclients", "1000",
	}, extra...)
	if err := s.start(bin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	return s
}

func (s *RedisServer) start(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	log, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", s.count)))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("layertest: starting redis-server: %w", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(exit)
	}()
	s.cmd, s.exit = cmd, exit
	if err := s.waitReady(exit); err != nil {
		_ = cmd.Process.Kill()
		<-exit
		out, _ := os.ReadFile(log.Name())
		return fmt.Errorf("layertest: redis-server on %s did not start: %w\n%s", s.Addr, err, out)
	}
	return nil
}

// waitReady polls PING until the server answers.
func (s *RedisServer) waitReady(exit chan struct{}) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: time.Second, MaxRetries: -1, PoolSize: 1, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exit:
			return fmt.Errorf("exited: %w", err)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

func (s *RedisServer) signal(sig os.Signal) {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exit:
	case <-time.After(startTimeout):
		_ = cmd.Process.Kill()
		<-exit
	}
}

// Pause freezes the server with SIGSTOP: it keeps its connections and
// the kernel still accepts new ones, but it answers nothing until
// Continue, as a node that hangs does.
func (s *RedisServer) Pause() { s.send(syscall.SIGSTOP) }

// Continue resumes a paused server with SIGCONT: it then runs what was
// queued meanwhile.
func (s *RedisServer) Continue() { s.send(syscall.SIGCONT) }

func (s *RedisServer) send(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("layertest: redis-server on %s is not running", s.Addr)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}

// Stop stops the server with SIGTERM and waits for it to exit.
func (s *RedisServer) Stop() { s.signal(syscall.SIGTERM) }

// Kill stops the server with SIGKILL and waits for it to exit.
func (s *RedisServer) Kill() { s.signal(syscall.SIGKILL) }

// Restart starts the stopped server again on the same port and waits
// until it answers. A cluster node keeps its identity and slots.
func (s *RedisServer) Restart() {
	s.t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.start(bin); err != nil {
		s.t.Fatal(err)
	}
}

// RedisCluster is a Redis Cluster owned by one test.
type RedisCluster struct {
	// Nodes are the masters, in the order of their slot ranges.
	Nodes []*RedisServer
	// Replicas are the replicas, if the cluster has any.
	Replicas []*RedisServer
}

// Addrs returns the address of every master.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// StartCluster starts masters redis-server processes in cluster mode,
// shares the 16384 slots among them, and waits until every node reports
// cluster_state:ok. It skips t when redis-server or redis-cli is missing.
func StartCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	return startCluster(t, masters, 0)
}

// StartClusterWithReplicas is StartCluster with one replica for each
// master, which takes over when its master fails.
func StartClusterWithReplicas(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	return startCluster(t, masters, 1)
}

func startCluster(t testing.TB, masters, replicas int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("layertest: a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		Unavailable(t, "redis-cli binary", err)
	}
	var all []*RedisServer
	for range masters * (1 + replicas) {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		bus, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		n := startRedisOn(t, port,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "2000",
			"--repl-diskless-sync-delay", "0", // replicas sync at once
		)
		all = append(all, n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range all {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("layertest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c := &RedisCluster{}
	for _, n := range all {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true})
		role, err := cl.Do(ctx, "ROLE").Slice()
		cl.Close()
		if err != nil || len(role) == 0 {
			t.Fatalf("layertest: ROLE of %s: %v %v", n.Addr, role, err)
		}
		if role[0] == "master" {
			c.Nodes = append(c.Nodes, n)
		} else {
			c.Replicas = append(c.Replicas, n)
		}
	}
	if len(c.Nodes) != masters {
		t.Fatalf("layertest: %d masters in the cluster, want %d", len(c.Nodes), masters)
	}
	c.WaitOK(t)
	// A replica that has not synced with its master cannot take over.
	for _, n := range c.Replicas {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true})
		for {
			info, err := cl.Info(ctx, "replication").Result()
			if err == nil && strings.Contains(info, "master_link_status:up") {
				break
			}
			if ctx.Err() != nil {
				cl.Close()
				t.Fatalf("layertest: replica %s never synced: %v", n.Addr, err)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, bounded by ctx
		}
		cl.Close()
	}
	return c
}

// WaitOK waits until every master reports cluster_state:ok and knows
// every other node.
func (c *RedisCluster) WaitOK(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for _, n := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, PoolSize: 1, Protocol: 2, DisableIdentity: true})
		for {
			err := clusterOK(cl, len(c.Nodes)+len(c.Replicas))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				cl.Close()
				t.Fatalf("layertest: cluster node %s not ready: %v", n.Addr, err)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
		}
		cl.Close()
	}
}

func clusterOK(c *redis.Client, nodes int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("cluster_state not ok")
	}
	if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(nodes)+"\r") {
		return fmt.Errorf("not every node known yet")
	}
	// Every node must also agree that all slots are served.
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return err
	}
	covered := 0
	for _, s := range slots {
		covered += s.End - s.Start + 1
	}
	if covered != 16384 {
		return fmt.Errorf("%d slots covered", covered)
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// MoveSlot moves slot, with its keys, to the master at addr, the way
// redis-cli --cluster reshard does: the new owner imports it, the old one
// migrates its keys, then each master is told the new owner. between runs
// once the new owner serves the slot and before the old one is told, the
// moment at which the old owner still holds its subscribers. MoveSlot
// returns once every master maps the slot to addr.
func (c *RedisCluster) MoveSlot(t testing.TB, slot int, addr string, between func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clients := map[string]*redis.Client{}
	ids := map[string]string{}
	for _, n := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true})
		defer cl.Close()
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("layertest: CLUSTER MYID on %s: %v", n.Addr, err)
		}
		clients[n.Addr], ids[n.Addr] = cl, id
	}
	from := c.owner(t, ctx, clients[addr], slot)
	if from == addr {
		t.Fatalf("layertest: %s owns slot %d already", addr, slot)
	}
	src, dst := clients[from], clients[addr]
	do := func(cl *redis.Client, args ...any) {
		t.Helper()
		if err := cl.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("layertest: %v: %v", args, err)
		}
	}
	do(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from])
	do(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[addr])
	host, port, _ := net.SplitHostPort(addr)
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil {
			t.Fatalf("layertest: CLUSTER GETKEYSINSLOT: %v", err)
		}
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		do(src, args...)
	}
	do(dst, "CLUSTER", "SETSLOT", slot, "NODE", ids[addr])
	between()
	do(src, "CLUSTER", "SETSLOT", slot, "NODE", ids[addr])
	for a, cl := range clients {
		if a != from && a != addr {
			do(cl, "CLUSTER", "SETSLOT", slot, "NODE", ids[addr])
		}
	}
	for _, cl := range clients {
		for c.owner(t, ctx, cl, slot) != addr {
			if ctx.Err() != nil {
				t.Fatalf("layertest: slot %d not moved everywhere", slot)
			}
			time.Sleep(10 * time.Millisecond) // polling a condition, bounded by ctx
		}
	}
}

// owner returns the address of the master that cl says owns slot.
func (c *RedisCluster) owner(t testing.TB, ctx context.Context, cl *redis.Client, slot int) string {
	t.Helper()
	slots, err := cl.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("layertest: CLUSTER SLOTS: %v", err)
	}
	for _, s := range slots {
		if slot >= s.Start && slot <= s.End && len(s.Nodes) > 0 {
			return s.Nodes[0].Addr
		}
	}
	return ""
}

// LogState logs what every node says of the cluster (CLUSTER NODES) and
// the end of its log, for a test that is about to fail.
func (c *RedisCluster) LogState(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range append(c.Nodes, c.Replicas...) {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr, Protocol: 2, DisableIdentity: true})
		nodes, err := cl.ClusterNodes(ctx).Result()
		cl.Close()
		t.Logf("layertest: %s: CLUSTER NODES (err %v):\n%s", n.Addr, err, nodes)
		logs, _ := filepath.Glob(filepath.Join(n.dir, "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			t.Logf("layertest: %s:\n%s", f, b[max(0, len(b)-2000):])
		}
	}
}

// WaitReplicated waits until every replica of the master at addr has
// everything the master has written so far: Redis replicates
// asynchronously, and a replica that takes over loses what it had not
// received.
func (c *RedisCluster) WaitReplicated(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cl := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true})
	defer cl.Close()
	for {
		info, err := cl.Info(ctx, "replication").Result()
		if err == nil && replicated(info) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("layertest: the replicas of %s did not catch up: %v\n%s", addr, err, info)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by ctx
	}
}

// replicated reports whether INFO replication of a master shows at least
// one replica and every replica at the master's offset.
func replicated(info string) bool {
	var want int64 = -1
	var offsets []int64
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			want, _ = strconv.ParseInt(v, 10, 64)
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, ",offset=") {
			_, rest, _ := strings.Cut(line, ",offset=")
			v, _, _ := strings.Cut(rest, ",")
			n, _ := strconv.ParseInt(v, 10, 64)
			offsets = append(offsets, n)
		}
	}
	if want < 0 || len(offsets) == 0 {
		return false
	}
	for _, n := range offsets {
		if n < want {
			return false
		}
	}
	return true
}
