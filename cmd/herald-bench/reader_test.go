package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testReaders lists the readers this platform has.
func testReaders() []string {
	if runtime.GOOS == "linux" {
		return []string{"goroutine", "epoll"}
	}
	return []string{"goroutine"}
}

// waitUntil polls cond, a counter's check that turns true once an event
// has happened, for up to 5 s; the test's own checks then say what is
// missing.
func waitUntil(cond func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReaders runs both readers against a scripted server of three
// connections: frames that come with the upgrade response, a ping, an
// extended length, a fragmented message and a frame split across two
// writes; then one connection is closed by the server with a close frame,
// one by dropping the socket, and one by the child at its finish.
func TestReaders(t *testing.T) {
	for _, reader := range testReaders() {
		t.Run(reader, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const conns, perConn = 3, 4
			results := make(chan error, conns)
			go func() {
				for k := range conns {
					nc, err := ln.Accept()
					if err != nil {
						results <- err
						continue
					}
					go func() { results <- scriptedServer(nc, k) }()
				}
			}()
			u, _ := url.Parse("ws://" + ln.Addr().String() + "/notifications/")
			c, err := newChild(childConfig{urls: []*url.URL{u}, n: conns, conc: conns, timeout: 5 * time.Second, maxTime: time.Minute, reader: reader}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c.connect(context.Background())
			if c.open.Load() != conns {
				t.Fatalf("%d connections open, want %d", c.open.Load(), conns)
			}
			// Two connections end by the server's doing; the third ends
			// when the child finishes.
			for range conns - 1 {
				if err := <-results; err != nil {
					t.Fatal(err)
				}
			}
			ended := func() int64 {
				c.cmu.Lock()
				defer c.cmu.Unlock()
				return c.closed["code_4001"] + c.closed["eof"]
			}
			waitUntil(func() bool { return c.received() >= conns*perConn && ended() >= conns-1 })
			c.finish()
			if err := <-results; err != nil {
				t.Fatal(err)
			}
			if got := c.received(); got != conns*perConn {
				t.Errorf("received %d messages, want %d", got, conns*perConn)
			}
			if n := c.unst.Load(); n != 0 {
				t.Errorf("%d messages without a stamp", n)
			}
			var m merged
			for i := range c.hs {
				m.Add(c.hs[i].Data())
			}
			if m.total != conns*perConn {
				t.Errorf("%d latencies recorded, want %d", m.total, conns*perConn)
			}
			if got, want := fmt.Sprint(c.closed), "map[code_4001:1 eof:1]"; got != want {
				t.Errorf("closed %s, want %s", got, want)
			}
			if n := c.open.Load(); n != 0 {
				t.Errorf("%d connections open after finish", n)
			}
		})
	}
}

// scriptedServer upgrades nc, sends it perConn stamped messages in
// several shapes with a ping among them, and ends it according to k: 0
// with a close frame, 1 by closing the socket, 2 by waiting for the
// client to close it.
func scriptedServer(nc net.Conn, k int) error {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	if _, err := http.ReadRequest(br); err != nil {
		return err
	}
	stamped := func(s string) string { return s + " @t=" + strconv.FormatInt(time.Now().UnixNano(), 10) }
	upgrade := append([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
		serverFrame(true, 0x1, stamped("with the upgrade"), 0)...)
	if _, err := nc.Write(upgrade); err != nil {
		return err
	}
	if _, err := nc.Write(serverFrame(true, 0x9, "are you there", 0)); err != nil {
		return err
	}
	if op, p, err := readClientFrame(br); err != nil || op != 0xA || p != "are you there" {
		return fmt.Errorf("connection %d: want the pong, got op %#x %q, %v", k, op, p, err)
	}
	frags := append(serverFrame(false, 0x1, "frag-", 0), serverFrame(true, 0x0, stamped("end"), 0)...)
	if _, err := nc.Write(append(serverFrame(true, 0x1, stamped(strings.Repeat("x", 200)), 126), frags...)); err != nil {
		return err
	}
	split := serverFrame(true, 0x1, stamped("split"), 0)
	for _, piece := range [][]byte{split[:5], split[5:]} {
		if _, err := nc.Write(piece); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // so that the pieces arrive with separate reads
	}
	switch k {
	case 0:
		if _, err := nc.Write(serverFrame(true, 0x8, "\x0f\xa1going", 0)); err != nil {
			return err
		}
		if op, p, err := readClientFrame(br); err != nil || op != 0x8 || p != "\x0f\xa1" {
			return fmt.Errorf("connection %d: want the close reply, got op %#x %q, %v", k, op, p, err)
		}
	case 2:
		if _, err := io.Copy(io.Discard, br); err != nil {
			return err
		}
	}
	return nil
}

// readClientFrame reads one masked frame of at most 125 bytes.
func readClientFrame(br *bufio.Reader) (byte, string, error) {
	var h [6]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, "", err
	}
	if h[1]&0x80 == 0 || h[1]&0x7f > 125 {
		return 0, "", fmt.Errorf("unmasked or long client frame")
	}
	p := make([]byte, h[1]&0x7f)
	if _, err := io.ReadFull(br, p); err != nil {
		return 0, "", err
	}
	for i := range p {
		p[i] ^= h[2+i%4]
	}
	return h[0] & 0x0f, string(p), nil
}
