package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The epoll reader serves all of a child's connections from one loop
// waiting on one epoll instance, instead of from a goroutine per
// connection. A goroutine per connection pays, for every frame that
// arrives alone, a netpoller wake-up, a goroutine switch and close to two
// reads, one of them finding nothing: 12–14 µs of CPU a frame in
// docs/BENCHMARKS.md. The loop takes every ready socket from one
// epoll_wait and reads each once.
//
// Sockets are level-triggered: the loop reads a ready socket once per
// round, and whatever that read left in it makes the next epoll_wait
// report it again. That spares the read an edge-triggered reader (Go's
// netpoller) must make to learn that a socket is drained, and no socket
// can keep the loop to itself.
//
// After the handshake the loop owns the socket through a descriptor of
// its own, and the net.Conn is closed: left open, it would keep the
// socket in the runtime's own edge-triggered epoll set, and every
// arrival would wake the runtime's network poller too, for nothing.
// Measured, that cost the client about a tenth more CPU.
//
// One loop, not one per core: on a machine the client shares with the
// server, what the client's reading costs is mostly being woken, and a
// single loop finds more sockets ready per wake-up. Measured on two
// cores, two loops per child cost about a fifth more client CPU than
// one, and at 10,000 subscribers × 10 messages/s twice its p99. A run
// that needs more reading than one core can do has more children
// (-procs). The loop is not locked to its
// thread: it waits in epoll_wait, a system call, which keeps the thread
// anyway, and the rest of its work never blocks.

// epollBuffer is the loop's read buffer, shared by all connections: a
// connection keeps only what a read left of an unfinished frame.
const epollBuffer = 64 << 10

// epollEvents is how many ready sockets one epoll_wait may return.
const epollEvents = 512

// stopCheckMS is how often, at least, the loop checks whether the child
// is stopping, in milliseconds.
const stopCheckMS = 100

type epollReader struct {
	c    *child
	epfd int
	buf  []byte
	// conns are the connections by index, nil once ended: an epoll
	// event carries the index. Connecting goroutines add to it while
	// the loop reads it.
	conns []atomic.Pointer[epollConn]
}

type epollConn struct {
	i      int
	fd     int // the socket, non-blocking
	frames frameParser
	// mu is held while the socket is read or closed: the churn closes
	// connections from other goroutines, and a descriptor closed under
	// the loop's read could at once be reused by a new socket. The loop
	// is its only taker otherwise, so it costs an uncontended lock a
	// read.
	mu     sync.Mutex
	closed bool
}

// newEpollReader starts the loop. It ends, closing the connections,
// once the child stops.
func newEpollReader(c *child) (*epollReader, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	r := &epollReader{c: c, epfd: epfd, buf: make([]byte, epollBuffer), conns: make([]atomic.Pointer[epollConn], c.cfg.n)}
	c.wg.Add(1)
	go r.run()
	return r, nil
}

// add hands connection i, just upgraded, to the loop; ws is done with.
func (r *epollReader) add(i int, ws *wsConn) {
	fd, err := dupSocket(ws.nc)
	ws.nc.Close()
	if err != nil {
		r.c.ended(err)
		return
	}
	ec := &epollConn{i: i, fd: fd}
	// Frames may have come with the upgrade response, into the
	// handshake's buffer.
	if n := ws.br.Buffered(); n > 0 {
		p, _ := ws.br.Peek(n)
		if err := r.take(ec, p, time.Now().UnixNano()); err != nil {
			r.end(ec, err)
			return
		}
	}
	r.conns[i].Store(ec)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		// An event for the connection this one replaces may still
		// bring the loop here.
		ec.mu.Lock()
		r.end(ec, os.NewSyscallError("epoll_ctl", err))
		ec.mu.Unlock()
	}
}

// drop closes connection i from outside the loop: with a normal close
// (code 1000), or, abrupt, without a close frame. It reports whether the
// connection was open.
func (r *epollReader) drop(i int, abrupt bool) bool {
	ec := r.conns[i].Load()
	if ec == nil {
		return false
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if ec.closed {
		return false
	}
	if !abrupt {
		_ = ec.write(0x8, closeNormal)
	}
	r.end(ec, net.ErrClosed)
	return true
}

// dupSocket returns a descriptor of nc's socket of the caller's own.
func dupSocket(nc net.Conn) (int, error) {
	sc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, dupErr := -1, error(nil)
	if err := sc.Control(func(s uintptr) { fd, dupErr = syscall.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, os.NewSyscallError("dup", dupErr)
	}
	return fd, nil
}

// end closes a connection and counts it by err's cause. Closing the
// socket's last descriptor also takes it out of the epoll set. The
// caller holds ec.mu once ec is in conns; the slot may already hold the
// connection that replaces ec.
func (r *epollReader) end(ec *epollConn, err error) {
	r.conns[ec.i].CompareAndSwap(ec, nil)
	ec.closed = true
	syscall.Close(ec.fd)
	r.c.ended(err)
}

// write sends a pong or a close reply. The socket is non-blocking, but a
// frame this small only fails to go out whole when the send buffer is
// full, that is when the server has long stopped reading: the
// connection is then as good as dead.
func (ec *epollConn) write(op byte, payload []byte) error {
	f, err := clientFrame(op, payload)
	if err != nil {
		return err
	}
	n, err := syscall.Write(ec.fd, f)
	if err != nil {
		return os.NewSyscallError("write", err)
	}
	if n < len(f) {
		return io.ErrShortWrite
	}
	return nil
}

// take handles the frames in p, the next piece of ec's stream, which
// arrived at now (Unix ns). An error means the connection is over.
func (r *epollReader) take(ec *epollConn, p []byte, now int64) error {
	for {
		op, payload, rest, ok, err := ec.frames.next(p)
		if err != nil || !ok {
			return err
		}
		p = rest
		switch op {
		case 0x8: // close
			code := 1005
			if len(payload) >= 2 {
				code = int(binary.BigEndian.Uint16(payload))
			}
			_ = ec.write(0x8, payload[:min(len(payload), 2)])
			return errClosed{code}
		case 0x9: // ping
			if err := ec.write(0xA, payload); err != nil {
				return err
			}
		case 0xA: // pong
		default:
			r.c.got(ec.i, payload, now)
		}
	}
}

func (r *epollReader) run() {
	defer r.c.wg.Done()
	events := make([]syscall.EpollEvent, epollEvents)
	for !r.c.stop.Load() {
		n, err := syscall.EpollWait(r.epfd, events, stopCheckMS)
		if err == syscall.EINTR {
			continue // a signal, such as the runtime's preemption
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "herald-bench: child %d: epoll_wait: %v\n", r.c.cfg.id, err)
			r.closeAll(os.NewSyscallError("epoll_wait", err))
			return
		}
		for _, ev := range events[:n] {
			if ec := r.conns[ev.Fd].Load(); ec != nil {
				ec.mu.Lock()
				if !ec.closed {
					r.read(ec)
				}
				ec.mu.Unlock()
			}
		}
	}
	r.closeAll(net.ErrClosed)
}

// read makes one read from a ready socket and handles what it brought.
func (r *epollReader) read(ec *epollConn) {
	n, err := syscall.Read(ec.fd, r.buf)
	switch {
	case err == syscall.EAGAIN:
		// Nothing to read after all.
	case err != nil:
		r.end(ec, os.NewSyscallError("read", err))
	case n == 0:
		r.end(ec, io.EOF)
	default:
		// One clock reading per read: every frame it brought arrived
		// at the same moment.
		if err := r.take(ec, r.buf[:n], time.Now().UnixNano()); err != nil {
			r.end(ec, err)
		}
	}
}

// closeAll ends the connections with err and releases the epoll
// instance.
func (r *epollReader) closeAll(err error) {
	for i := range r.conns {
		if ec := r.conns[i].Load(); ec != nil {
			ec.mu.Lock()
			if !ec.closed {
				r.end(ec, err)
			}
			ec.mu.Unlock()
		}
	}
	syscall.Close(r.epfd)
}
