package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/notifier/pgtest"
)

// plainBinary builds, once, herald without the race detector, which
// slows the notifier and the API so much that no burst outruns a reading
// client: these tests run at the speed of the binary users run.
var plainBinary = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(heraldBinary), "herald-plain") // removed with heraldBinary
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building herald without -race: %v\n%s", err, out)
	}
	return bin, nil
})

func startPlain(t *testing.T, env ...string) *instance {
	t.Helper()
	bin, err := plainBinary()
	if err != nil {
		t.Fatal(err)
	}
	return startBinary(t, bin, env...)
}

// burstWait bounds a whole burst test: thousands of frames on a shared
// machine.
const burstWait = 90 * time.Second

// drainAll reads the client's frames as fast as it can until it has n
// frames of type name.gossip, and returns them; or what had arrived when
// the connection closed or stalled, with the reason.
func drainAll(c *client, n int) ([]map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), burstWait)
	defer cancel()
	got := make([]map[string]any, 0, n)
	for len(got) < n {
		_, data, err := c.conn.Read(ctx)
		if err != nil {
			return got, fmt.Errorf("after %d of %d frames: %w (close status %d)", len(got), n, err, websocket.CloseStatus(err))
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return got, fmt.Errorf("frame %s: %w", data, err)
		}
		if m["type"] == "name.gossip" {
			got = append(got, m)
		}
	}
	return got, nil
}

func drain(t *testing.T, c *client, n int) []map[string]any {
	t.Helper()
	got, err := drainAll(c, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// stillOpen checks that the client was not closed: a marker sent after
// the burst is its next frame.
func stillOpen(t *testing.T, in *instance, c *client) {
	t.Helper()
	if st := in.post(t, "/api/groups/gossip/send", `{"type":"name.gossip","message":"after"}`); st != http.StatusAccepted {
		t.Fatalf("marker send: %d", st)
	}
	if got := c.next(); got["message"] != "after" {
		t.Fatalf("frame after the burst: %v", got)
	}
}

// TestBurstOfInsertsReachesAReadingClient: 2,000 posts committed in one
// transaction reach a plain WebSocket client that reads as fast as it
// can, all of them, in order, and the client stays connected. A burst
// that a reading client drains is no reason to close it.
func TestBurstOfInsertsReachesAReadingClient(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	in := startPlain(t, "DATABASE_URL="+db)
	in.waitReady(t)
	c := dialNotifications(t, in.addr)
	joinedEverywhere(t, in)

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const n = 2000
	if _, err := conn.Exec(ctx, `insert into posts(author,message) select 'a','m'||g from generate_series(1,2000) g`); err != nil {
		t.Fatal(err)
	}
	got := drain(t, c, n)
	for i, m := range got {
		if want := fmt.Sprintf("m%d", i+1); m["message"] != want {
			t.Fatalf("frame %d is %v, want message %s", i, m, want)
		}
	}
	stillOpen(t, in, c)
}

// TestBurstOfAPISendsReachesReadingClients: 3,000 messages published
// through the API as fast as a few concurrent callers can reach every
// reading client, each once, each caller's in the order it sent them.
// The instance gathers frames for 50ms rather than 10ms (a valid
// setting, fewer writes for more latency), so that a publisher on a
// small machine queues per gathering what a faster one does in 10ms.
func TestBurstOfAPISendsReachesReadingClients(t *testing.T) {
	t.Parallel()
	in := startPlain(t, "HERALD_WRITE_DELAY=50ms")
	in.waitReady(t)
	const n, callers, readers = 3000, 8, 20
	var cs []*client
	for range readers {
		cs = append(cs, dialNotifications(t, in.addr))
	}
	joinedEverywhere(t, in)

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers}, Timeout: burstWait}
	var wg sync.WaitGroup
	defer wg.Wait() // the callers end by themselves, even if the test fails
	errs := make(chan error, callers)
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += callers {
				body := fmt.Sprintf(`{"type":"name.gossip","w":%d,"i":%d}`, w, i)
				resp, err := hc.Post("http://"+in.addr+"/api/groups/gossip/send", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("send %d: status %d", i, resp.StatusCode)
					return
				}
			}
		}()
	}
	// Every client reads on its own goroutine, as fast as it can.
	got := make([][]map[string]any, readers)
	failed := make([]error, readers)
	var rg sync.WaitGroup
	for k, c := range cs {
		rg.Add(1)
		go func() {
			defer rg.Done()
			got[k], failed[k] = drainAll(c, n)
		}()
	}
	rg.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k := range cs {
		if failed[k] != nil {
			t.Fatalf("client %d: %v", k, failed[k])
		}
		seen := make(map[int]bool, n)
		last := make(map[int]int, callers)
		for w := range callers {
			last[w] = -1
		}
		for _, m := range got[k] {
			w, i := int(m["w"].(float64)), int(m["i"].(float64))
			if seen[i] {
				t.Fatalf("client %d: message %d twice", k, i)
			}
			seen[i] = true
			if i <= last[w] {
				t.Fatalf("client %d: caller %d's message %d after %d", k, w, i, last[w])
			}
			last[w] = i
		}
	}
	for _, c := range cs {
		stillOpen(t, in, c)
	}
}
