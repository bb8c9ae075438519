package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier/pgtest"
)

const wait = 10 * time.Second

// heraldBinary is built once for the tests that run real processes.
var heraldBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-e2e-")
	if err != nil {
		panic(err)
	}
	heraldBinary = filepath.Join(dir, "herald")
	build := exec.Command("go", "build", "-race", "-o", heraldBinary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building herald:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one herald process.
type instance struct {
	addr string
	cmd  *exec.Cmd
	log  *syncLog
}

// syncLog collects a process's log lines for the test to read.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(line + "\n")
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listenRE = regexp.MustCompile(`addr=(\S+)`)

// startHerald starts a herald process with env added to its environment
// and waits until it listens.
func startHerald(t *testing.T, env ...string) *instance {
	t.Helper()
	return startBinary(t, heraldBinary, env...)
}

// startBinary is startHerald for the herald binary at bin.
func startBinary(t *testing.T, bin string, env ...string) *instance {
	t.Helper()
	addrFlag := "127.0.0.1:0"
	for _, e := range env {
		if a, ok := strings.CutPrefix(e, "HERALD_ADDR="); ok {
			addrFlag = a
		}
	}
	cmd := exec.Command(bin, "-addr", addrFlag)
	// The per-address HTTP and replay limits are off unless a test sets
	// them: the tests' clients all come from 127.0.0.1.
	cmd.Env = append(os.Environ(), "REDIS_URL=", "DATABASE_URL=", "HERALD_API_TOKEN=",
		"HERALD_HTTP_RATE_LIMIT=0", "HERALD_REPLAY_RATE=0")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inst := &instance{cmd: cmd, log: &syncLog{}}
	addr := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			inst.log.add(line)
			if m := listenRE.FindStringSubmatch(line); m != nil && strings.Contains(line, "herald listening") {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		<-logDone
		if t.Failed() {
			t.Logf("herald %s log:\n%s", inst.addr, inst.log.String())
		}
	})
	select {
	case inst.addr = <-addr:
	case <-time.After(wait):
		t.Fatal("herald did not start listening")
	}
	return inst
}

// waitReady polls /readyz until the instance reports ready.
func (in *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get("http://" + in.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s not ready: %v", in.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig, as a deploy or an orchestrator would, and waits for
// the process to exit cleanly.
func (in *instance) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- in.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("instance %s exited with %v after %v", in.addr, err, sig)
		}
	case <-time.After(2 * wait):
		t.Fatalf("instance %s did not exit within %v of %v", in.addr, 2*wait, sig)
	}
}

// restartHerald stops in with sig and starts a new process with env on
// the same address, and waits until it is ready.
func restartHerald(t *testing.T, in *instance, sig os.Signal, env ...string) *instance {
	t.Helper()
	in.stop(t, sig)
	fresh := startHerald(t, append(slices.Clip(env), "HERALD_ADDR="+in.addr)...)
	fresh.waitReady(t)
	return fresh
}

func (in *instance) post(t *testing.T, path, body string) int {
	t.Helper()
	status, _ := in.postBody(t, path, body)
	return status
}

// postBody is post that also returns the answer's body.
func (in *instance) postBody(t *testing.T, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+in.addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Logf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	return resp.StatusCode, string(b)
}

// client is a browser stand-in connected to /notifications/.
type client struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialNotifications(t *testing.T, addr string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/notifications/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &client{t: t, conn: c}
}

func (c *client) next() map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, data, err := c.conn.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		c.t.Fatalf("frame %s: %v", data, err)
	}
	return m
}

// redisURL returns REDIS_URL once Redis answers, or skips t.
func redisURL(t *testing.T) string {
	t.Helper()
	layertest.RedisClient(t)
	return layertest.RedisURL()
}

// joined waits until an API group send to gossip through in reaches
// someone, which happens once every client dialed so far has joined
// (clients join before they are accepted, and dial returns after that).
// It uses a type no consumer handles, so nobody sees it.
func joinedEverywhere(t *testing.T, instances ...*instance) {
	t.Helper()
	for _, in := range instances {
		// "sent", not just 202: gossip keeps history, so a send that
		// reached nobody is accepted too, as "kept".
		if st, body := in.postBody(t, "/api/groups/gossip/send", `{"type":"test.ping"}`); st != http.StatusAccepted || !strings.Contains(body, `"sent"`) {
			t.Fatalf("group gossip not reachable through %s: %d %s", in.addr, st, body)
		}
	}
}

// TestTwoInstancesShareRedisAndPostgres is the deployment the README
// describes: two processes, one Redis, one Postgres.
func TestTwoInstancesShareRedisAndPostgres(t *testing.T) {
	t.Parallel()
	ru := redisURL(t)
	db := pgtest.NewDatabase(t)
	env := []string{"REDIS_URL=" + ru, "DATABASE_URL=" + db, "HERALD_REDIS_PREFIX=" + layertest.Prefix(t)}
	a, b := startHerald(t, env...), startHerald(t, env...)
	a.waitReady(t)
	b.waitReady(t)
	ca, cb := dialNotifications(t, a.addr), dialNotifications(t, b.addr)
	joinedEverywhere(t, a, b)

	// A row inserted by any writer, here a plain SQL client.
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ids []int64
	for _, m := range []string{"from psql", "second"} {
		var id int64
		if err := conn.QueryRow(context.Background(),
			`INSERT INTO posts (author, message) VALUES ($1, $2) RETURNING id`, "sql", m).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Each client sees each post once: the two frames are the two posts,
	// in order, with no copy in between.
	for _, c := range []*client{ca, cb} {
		for i, want := range []string{"from psql", "second"} {
			got := c.next()
			if got["type"] != "name.gossip" || got["event"] != "New Post" || got["sender"] != "sql" ||
				got["message"] != want || got["id"] != float64(ids[i]) {
				t.Fatalf("frame %d: %v", i, got)
			}
		}
	}

	// A message POSTed to one instance's API reaches clients of both.
	msg := `{"type":"name.gossip","event":"New Post","sender":"api","message":"via a","id":0}`
	if st := a.post(t, "/api/groups/gossip/send", msg); st != http.StatusAccepted {
		t.Fatalf("group send: %d", st)
	}
	for _, c := range []*client{ca, cb} {
		if got := c.next(); got["message"] != "via a" {
			t.Fatalf("got %v", got)
		}
	}

	// POST /posts on b stores the post in Postgres; the trigger delivers
	// it, once, to clients of both.
	if st := b.post(t, "/posts", `{"author":"web","message":"via the page"}`); st != http.StatusCreated {
		t.Fatalf("POST /posts: %d", st)
	}
	for _, c := range []*client{ca, cb} {
		if got := c.next(); got["message"] != "via the page" || got["sender"] != "web" {
			t.Fatalf("got %v", got)
		}
	}
	// Nothing else is in flight: a final marker is the next frame.
	if st := a.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","message":"end"}`); st != http.StatusAccepted {
		t.Fatal(st)
	}
	for _, c := range []*client{ca, cb} {
		if got := c.next(); got["message"] != "end" {
			t.Fatalf("duplicate or stray frame: %v", got)
		}
	}
}

// TestMemoryDefault is the README's first command: no services at all.
func TestMemoryDefault(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	in.waitReady(t)
	c1, c2 := dialNotifications(t, in.addr), dialNotifications(t, in.addr)
	joinedEverywhere(t, in)
	st, body := in.postBody(t, "/posts", `{"author":"ana","message":"hello"}`)
	var created struct{ ID float64 }
	if err := json.Unmarshal([]byte(body), &created); st != http.StatusCreated || err != nil || created.ID <= 0 {
		t.Fatalf("POST /posts: %d %s", st, body)
	}
	for _, c := range []*client{c1, c2} {
		if got := c.next(); got["message"] != "hello" || got["sender"] != "ana" || got["id"] != created.ID {
			t.Fatalf("got %v", got)
		}
	}
	if !strings.Contains(in.log.String(), "memory") {
		t.Errorf("start line does not name the layer:\n%s", in.log.String())
	}
}

// TestSIGTERMDrains checks that a stopping instance tells clients to
// reconnect (1012) and exits.
func TestSIGTERMDrains(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	c := dialNotifications(t, in.addr)
	joinedEverywhere(t, in)
	if err := in.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, _, err := c.conn.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusServiceRestart {
		t.Fatalf("read after SIGTERM: %v, want close 1012", err)
	}
}

func TestBadSettingStops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ env, want string }{
		{"REDIS_URL=ftp://x", "REDIS_URL"},
		{"DATABASE_URL=postgres://a b", "DATABASE_URL"},
		{"HERALD_ADDR=nowhere", "HERALD_ADDR"},
		{"HERALD_QUEUE_BYTES=0", "HERALD_QUEUE_BYTES"},
		{"HERALD_LOG_FORMAT=xml", "HERALD_LOG_FORMAT"},
		{"HERALD_ROUTES=/a/ typs=x", "HERALD_ROUTES"},
	} {
		cmd := exec.Command(heraldBinary)
		cmd.Env = append(os.Environ(), "HERALD_ADDR=", "REDIS_URL=", "DATABASE_URL=", tc.env)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("%s: exit %v, want 2", tc.env, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: message does not name %s: %s", tc.env, tc.want, out)
		}
	}
}
