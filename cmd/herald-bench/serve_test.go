package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var serveListenRE = regexp.MustCompile(`listening on (\S+),`)

// startServe builds herald-bench and starts "herald-bench serve" with
// args and env added to a clean environment, and returns its address.
func startServe(t *testing.T, args []string, env ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "herald-bench")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building herald-bench: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"serve", "-addr", "127.0.0.1:0", "-max-time", "2m"}, args...)...)
	cmd.Env = append(os.Environ(), "REDIS_URL=", "DATABASE_URL=", "REDIS_CLUSTER_ADDRS=", "HERALD_API_TOKEN=")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	logDone := make(chan struct{})
	var log strings.Builder
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if m := serveListenRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		<-logDone
		if err != nil {
			t.Errorf("herald-bench serve exited with %v", err)
		}
		if t.Failed() {
			t.Logf("herald-bench serve log:\n%s", log.String())
		}
	})
	select {
	case a := <-addr:
		return a
	case <-time.After(time.Minute):
		t.Fatal("herald-bench serve did not start listening")
		return ""
	}
}

// TestServeIsHeraldsServer checks that "herald-bench serve" profiles the
// server cmd/herald runs, not a lookalike: gossip keeps a history there,
// so a client that comes back with since= gets the message it missed.
func TestServeIsHeraldsServer(t *testing.T) {
	addr := startServe(t, nil)
	send := func(body string) string {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/api/groups/gossip/send", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("group send %s: %d %s", body, resp.StatusCode, b)
		}
		return string(b)
	}
	dial := func(query string) *websocket.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/notifications/"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	next := func(c *websocket.Conn) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("frame %s: %v", data, err)
		}
		return m
	}

	c := dial("")
	// The client has joined once a send reaches someone.
	if body := send(`{"type":"test.ping"}`); !strings.Contains(body, `"sent"`) {
		t.Fatalf("group send to a joined client: %s", body)
	}
	send(`{"type":"name.gossip","message":"seen"}`)
	seen := next(c)
	id, _ := seen["herald_id"].(string)
	if seen["message"] != "seen" || id == "" {
		t.Fatalf("frame %v: want message seen with a herald_id", seen)
	}
	c.Close(websocket.StatusNormalClosure, "")

	send(`{"type":"name.gossip","message":"missed"}`)
	back := dial("?since=" + url.QueryEscape(id))
	if got := next(back); got["message"] != "missed" {
		t.Fatalf("after since=%s: %v, want the missed message", id, got)
	}
}
