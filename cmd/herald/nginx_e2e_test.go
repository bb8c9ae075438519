package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// startNginx runs nginx with deploy/nginx.conf, its upstreams pointed at
// addrs, and returns the address it listens on.
func startNginx(t *testing.T, addrs []string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nginx"); err2 != nil {
			layertest.Unavailable(t, "nginx (apt-get install nginx-light)", err)
		}
		bin = "/usr/sbin/nginx"
	}
	site, err := os.ReadFile("../../deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	var ups strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&ups, "    server %s max_fails=1 fail_timeout=5s;\n", a)
	}
	conf := regexp.MustCompile(`(?s)# herald-upstreams-begin\n.*?# herald-upstreams-end`).
		ReplaceAllString(string(site), "# herald-upstreams-begin\n"+ups.String()+"    # herald-upstreams-end")
	conf = regexp.MustCompile(`(# herald-listen\n\s*)listen [^;]*;`).ReplaceAllString(conf, "${1}listen "+listen+";")
	if !strings.Contains(conf, "listen "+listen+";") || strings.Contains(conf, "127.0.0.1:8001") {
		t.Fatal("deploy/nginx.conf lost the markers this test relies on")
	}
	dir := t.TempDir()
	wrapped := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
worker_processes 1;
events {}
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, conf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(wrapped), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off; user root;")
	out := &syncLog{}
	cmd.Stdout, cmd.Stderr = logWriter{out}, logWriter{out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\n%s", out.String(), b)
		}
	})
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get("http://" + listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return listen
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type logWriter struct{ l *syncLog }

func (w logWriter) Write(p []byte) (int, error) { w.l.add(string(p)); return len(p), nil }

// openConnections reads an instance's count of open /notifications/
// connections from its /metrics.
func openConnections(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + "/metrics")
	if err != nil {
		return "down"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`herald_connections_open\{route="/notifications/"\} (\d+)`).FindSubmatch(b)
	if m == nil {
		return "0"
	}
	return string(m[1])
}

// TestBehindNginx is the operator's check: three instances behind the
// nginx config from deploy/, a page open through nginx, the instance that
// serves it stopped with SIGTERM; the page reconnects through nginx and
// keeps receiving.
func TestBehindNginx(t *testing.T) {
	ru := redisURL(t)
	env := []string{"REDIS_URL=" + ru, "HERALD_REDIS_PREFIX=" + layertest.Prefix(t)}
	insts := []*instance{startHerald(t, env...), startHerald(t, env...), startHerald(t, env...)}
	var addrs []string
	for _, in := range insts {
		in.waitReady(t)
		addrs = append(addrs, in.addr)
	}
	lb := startNginx(t, addrs)
	ctx := browser(t)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("opening the page through nginx", chromedp.Navigate("http://"+lb+"/"), chromedp.WaitVisible(`#status[data-state="open"]`))

	serving := -1
	deadline := time.Now().Add(wait)
	for serving < 0 {
		for i, in := range insts {
			if openConnections(t, in) == "1" {
				serving = i
			}
		}
		if serving < 0 && time.Now().After(deadline) {
			t.Fatal("no instance reports the page's connection")
		}
	}
	victim := insts[serving]
	if err := victim.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := victim.cmd.Wait(); err != nil {
		t.Fatalf("stopped instance exited with %v", err)
	}

	// The page is told to reconnect (1012) and lands on another instance.
	deadline = time.Now().Add(wait)
	for {
		moved := false
		for i, in := range insts {
			if i != serving && openConnections(t, in) == "1" {
				moved = true
			}
		}
		if moved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the page did not reconnect to another instance")
		}
		time.Sleep(20 * time.Millisecond)
	}
	step("page open again", chromedp.WaitVisible(`#status[data-state="open"]`))

	msg := `{"type":"name.gossip","event":"New Post","sender":"ops","message":"after the restart","id":777}`
	resp, err := http.Post("http://"+lb+"/api/groups/gossip/send", "application/json", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("send through nginx: %d", resp.StatusCode)
	}
	step("the page shows the message", chromedp.WaitVisible(`#feed [data-post-id="777"]`))
	text, err := chromedp.Run(ctx, chromedp.Text(`#feed [data-post-id="777"] .message`))
	if err != nil || strings.TrimSpace(text) != "after the restart" {
		t.Fatalf("page shows %q (%v)", text, err)
	}
}

// TestNginxHidesMetrics: the shipped nginx config does not forward
// /metrics, however the path is spelled, while the instance behind it
// still serves it to whoever reaches it directly.
func TestNginxHidesMetrics(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	front := startNginx(t, []string{in.addr})
	for _, path := range []string{"/metrics", "//metrics", "/%6detrics", "/./metrics", "/metrics?format=text"} {
		if st := status("http://" + front + path); st != http.StatusNotFound {
			t.Errorf("GET %s through nginx: %d, want 404", path, st)
		}
	}
	if st := status("http://" + front + "/healthz"); st != http.StatusOK {
		t.Errorf("GET /healthz through nginx: %d", st)
	}
	if st := status("http://" + in.addr + "/metrics"); st != http.StatusOK {
		t.Errorf("GET /metrics on the instance: %d", st)
	}
}
