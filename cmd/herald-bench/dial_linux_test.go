package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialFromSourceDefersThePort checks that a connection from a chosen
// source address leaves the choice of its port to connect (see
// bindNoPort), and still comes from that address.
func TestDialFromSourceDefersThePort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		if _, err := http.ReadRequest(bufio.NewReader(nc)); err != nil {
			done <- err
			return
		}
		_, err = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		done <- err
	}()
	u, _ := url.Parse("ws://" + ln.Addr().String() + "/notifications/")
	c, err := dialWS(context.Background(), u, net.ParseIP("127.0.0.2"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.nc.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ip := c.nc.LocalAddr().(*net.TCPAddr).IP.String(); ip != "127.0.0.2" {
		t.Errorf("connected from %s, want 127.0.0.2", ip)
	}
	sc, err := c.nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := sc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if v != 1 {
		t.Errorf("IP_BIND_ADDRESS_NO_PORT is %d, want 1", v)
	}
}
