package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TestShare checks that the children's shares add up to the whole and
// differ by at most one.
func TestShare(t *testing.T) {
	for _, tc := range []struct{ n, procs int }{{1, 1}, {10, 3}, {2, 5}, {100000, 7}, {19999, 2}} {
		sum, lo, hi := 0, tc.n, 0
		for k := 0; k < tc.procs; k++ {
			s := share(tc.n, tc.procs, k)
			sum += s
			lo, hi = min(lo, s), max(hi, s)
		}
		if sum != tc.n || hi-lo > 1 {
			t.Errorf("%d over %d: sum %d, shares from %d to %d", tc.n, tc.procs, sum, lo, hi)
		}
	}
}

// TestAbruptAt checks that every run of closes has its fraction of
// abrupt ones, to within one.
func TestAbruptAt(t *testing.T) {
	for _, f := range []float64{0, 0.1, 0.25, 1.0 / 3, 1} {
		count := 0
		for k := int64(0); k < 1000; k++ {
			if abruptAt(k, f) {
				count++
			}
			if want := float64(k+1) * f; float64(count) < want-1 || float64(count) > want+1 {
				t.Fatalf("f=%v: %d abrupt of the first %d closes", f, count, k+1)
			}
		}
	}
}

// TestChurn has a child with each reader hold four connections to a
// server that records how each connection ended, replace twenty of
// them, a quarter abruptly, and finish.
func TestChurn(t *testing.T) {
	for _, reader := range testReaders() {
		t.Run(reader, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var (
				mu    sync.Mutex
				ends  = map[string]int{}
				conns int
			)
			go func() {
				for {
					nc, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						how := closeHow(nc)
						mu.Lock()
						ends[how]++
						conns++
						mu.Unlock()
					}()
				}
			}()
			u, _ := url.Parse("ws://" + ln.Addr().String() + "/notifications/")
			const n, replaced = 4, 20
			var out bytes.Buffer
			c, err := newChild(childConfig{urls: []*url.URL{u}, n: n, conc: n, timeout: 5 * time.Second, maxTime: time.Minute,
				reader: reader, churnRate: 200, churnFor: replaced * 5 * time.Millisecond, abrupt: 0.25}, &out)
			if err != nil {
				t.Fatal(err)
			}
			c.connect(t.Context())
			c.churn(t.Context())
			if got := c.open.Load(); got != n {
				t.Errorf("%d connections open after the churn, want %d", got, n)
			}
			c.finish()
			var churned event
			for _, line := range bytes.Split(out.Bytes(), []byte("\n")) {
				if bytes.Contains(line, []byte(`"ev":"churned"`)) {
					if err := json.Unmarshal(line, &churned); err != nil {
						t.Fatal(err)
					}
				}
			}
			// A replacement slower than a round over the slots is skipped
			// (on a loaded machine, a few): every other one is a close and
			// a reconnect, a quarter of them abrupt.
			ok, abrupt := churned.OK, churned.Closes["abrupt"]
			if ok+churned.Skipped != replaced || churned.Skipped > replaced/2 || len(churned.Failed) != 0 ||
				churned.Closes["normal"]+abrupt != ok || abrupt > replaced/4 || abrupt < replaced/4-churned.Skipped ||
				churned.Open != n {
				t.Errorf("churned: reconnects %d, skipped %d, failed %v, closes %v, open %d; want %d replaced in all, a quarter abrupt, %d open",
					ok, churned.Skipped, churned.Failed, churned.Closes, churned.Open, replaced, n)
			}
			waitUntil(func() bool {
				mu.Lock()
				defer mu.Unlock()
				return conns == n+int(ok)
			})
			mu.Lock()
			defer mu.Unlock()
			// The four left at the finish are closed without a frame.
			if got, want := fmt.Sprint(ends), fmt.Sprintf("map[abrupt:%d normal:%d]", abrupt+n, ok-abrupt); got != want {
				t.Errorf("server saw the connections end %s, want %s", got, want)
			}
			if len(c.closed) != 0 {
				t.Errorf("closes counted as the server's: %v", c.closed)
			}
		})
	}
}

// closeHow upgrades nc, reads its client frames until it ends, and tells
// how it ended: normal (a close frame with code 1000), abrupt (the socket
// closed without one) or what else happened.
func closeHow(nc net.Conn) string {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	if _, err := http.ReadRequest(br); err != nil {
		return "bad request"
	}
	if _, err := io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"); err != nil {
		return "write failed"
	}
	for {
		op, p, err := readClientFrame(br)
		switch {
		case errors.Is(err, io.EOF):
			return "abrupt"
		case err != nil:
			return err.Error()
		case op == 0x8 && p == "\x03\xe8":
			return "normal"
		case op == 0x8:
			return fmt.Sprintf("close %q", p)
		}
	}
}
