package router

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPConns counts and limits the plain HTTP connections of a server: the
// TCP connections that serve ordinary requests, idle keep-alives and
// requests still arriving included, as opposed to the WebSockets and
// event streams that consumer.Server counts and limits itself.
//
// Limits apply when a connection is accepted, before anything is read
// from it: one past Max gets a 503, one past MaxPerAddr from the same
// TCP peer address a 429, each written without waiting and followed by
// the close, so a refusal costs a system call or two and no goroutine.
// (A client that has already sent its request may see the connection
// reset instead of the answer.)
//
// A request that consumer.Server admits as a WebSocket or an event stream
// stops counting here for as long as it is one (see Handoff): a WebSocket
// leaves for good when it is hijacked, an event stream's connection comes
// back when the stream ends and the connection is kept alive. So every
// open connection is counted once, here or there.
//
// Wire it into the http.Server with Listener, ConnContext and ConnState;
// without the last two, connections are counted but never released.
// The zero value has no limits; set the fields before Listener.
type HTTPConns struct {
	// Max caps the plain connections open at once. 0: no cap.
	Max int
	// MaxPerAddr caps those from one TCP peer address. 0: no cap.
	MaxPerAddr int
	// Exempt are the peers not held to MaxPerAddr, such as proxies that
	// carry many clients' requests (HERALD_TRUSTED_PROXIES). They count
	// toward Max.
	Exempt []netip.Prefix

	mu      sync.Mutex
	conns   map[net.Conn]*httpConn
	open    int
	perAddr map[netip.Addr]int

	accepted       atomic.Int64
	refusedMax     atomic.Int64
	refusedPerAddr atomic.Int64
}

// httpConn is one accepted connection, under HTTPConns.mu.
type httpConn struct {
	addr    netip.Addr
	limited bool // counted in perAddr
	away    bool // served by consumer.Server now: not counted
}

// HTTPConnStats are the counters of an HTTPConns.
type HTTPConnStats struct {
	Open           int64 // plain connections open now
	Accepted       int64 // connections accepted in all
	RefusedMax     int64 // refused because Max were open
	RefusedPerAddr int64 // refused because MaxPerAddr were open from the address
}

// Stats returns the counters.
func (h *HTTPConns) Stats() HTTPConnStats {
	h.mu.Lock()
	open := h.open
	h.mu.Unlock()
	return HTTPConnStats{
		Open:           int64(open),
		Accepted:       h.accepted.Load(),
		RefusedMax:     h.refusedMax.Load(),
		RefusedPerAddr: h.refusedPerAddr.Load(),
	}
}

// Listener returns ln with the limits applied to every connection it
// accepts.
func (h *HTTPConns) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, h: h}
}

type limitedListener struct {
	net.Listener
	h *HTTPConns
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.h.admit(c) {
			return c, nil
		}
	}
}

// Refusals, written to a fresh connection before anything is read.
var (
	refuseMax     = refusal(http.StatusServiceUnavailable, "too many connections on this instance; try again later")
	refusePerAddr = refusal(http.StatusTooManyRequests, "too many connections from your address")
)

func refusal(status int, msg string) []byte {
	body := fmt.Sprintf(`{"error":%q,"code":"too_many_connections"}`+"\n", msg)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", status, http.StatusText(status), len(body), body)
}

// admit counts c in, or refuses and closes it.
func (h *HTTPConns) admit(c net.Conn) bool {
	var addr netip.Addr
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		addr = ta.AddrPort().Addr().Unmap()
	}
	limited := h.MaxPerAddr > 0 && addr.IsValid() && !h.exempt(addr)
	h.mu.Lock()
	var refuse []byte
	switch {
	case h.Max > 0 && h.open >= h.Max:
		refuse = refuseMax
		h.refusedMax.Add(1)
	case limited && h.perAddr[addr] >= h.MaxPerAddr:
		refuse = refusePerAddr
		h.refusedPerAddr.Add(1)
	default:
		if h.conns == nil {
			h.conns, h.perAddr = make(map[net.Conn]*httpConn), make(map[netip.Addr]int)
		}
		h.conns[c] = &httpConn{addr: addr, limited: limited}
		h.open++
		if limited {
			h.perAddr[addr]++
		}
	}
	h.mu.Unlock()
	if refuse == nil {
		h.accepted.Add(1)
		return true
	}
	// The send buffer of a new connection is empty: the write does not
	// wait, and the deadline makes sure of it.
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	_, _ = c.Write(refuse)
	_ = c.Close()
	return false
}

func (h *HTTPConns) exempt(a netip.Addr) bool {
	for _, p := range h.Exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// count adds d to the counts of e. h.mu must be held.
func (h *HTTPConns) count(e *httpConn, d int) {
	h.open += d
	if e.limited {
		if h.perAddr[e.addr] += d; h.perAddr[e.addr] <= 0 {
			delete(h.perAddr, e.addr)
		}
	}
}

// ConnState is for http.Server.ConnState: a closed or hijacked
// connection stops counting.
func (h *HTTPConns) ConnState(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.conns[c]
	if !ok {
		return
	}
	delete(h.conns, c)
	if !e.away {
		h.count(e, -1)
	}
}

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets Handoff find a
// request's connection.
func (h *HTTPConns) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Handoff is for consumer.Server.Handoff: r's connection, admitted as a
// WebSocket or an event stream, stops counting as a plain connection;
// the function returned, called when that ends, counts it again if it is
// still open and was not hijacked (an event stream's connection can be
// kept alive for more requests; a failed upgrade's can too).
func (h *HTTPConns) Handoff(r *http.Request) (done func()) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.conns[c]
	if !ok || e.away {
		return func() {}
	}
	e.away = true
	h.count(e, -1)
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if e.away && h.conns[c] == e {
			e.away = false
			h.count(e, 1)
		}
	}
}
