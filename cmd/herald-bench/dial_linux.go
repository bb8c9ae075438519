package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort is the Control of a dialer with a chosen source address. It
// sets IP_BIND_ADDRESS_NO_PORT, so that the kernel picks the source port
// at connect time, where any port not already used towards the same
// destination will do, and a port held by a connection in TIME_WAIT can
// be reused (net.ipv4.tcp_tw_reuse). Without it the port is taken when
// the socket is bound, from a search of the ports that no socket of that
// address holds, which slows down as they fill: tens of thousands of
// connections, or the TIME_WAIT left by an earlier run, then make each
// bind cost milliseconds of kernel time under a shared lock.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}
