package layertest

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a target on loopback, and can make
// the path go silent, as a cut network does: no reset, no close, just no
// bytes (Freeze), or hold every byte for a while and then deliver it, as
// a congested path or a paused server does (Stall). Tests use it to show
// that a layer notices a dead connection on its own, and that a command
// a client retried after a timeout is not applied twice.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}         // closed by Thaw
	conns  map[net.Conn]struct{} // both ends of every open pair
	wg     sync.WaitGroup

	refusing bool

	stalled bool
	release chan struct{} // closed by Release
	held    int           // reads waiting for Release
	settled sync.Cond     // signalled when held drops
}

// StartProxy listens on a free loopback port and forwards to target until
// the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, thaw: make(chan struct{}), conns: make(map[net.Conn]struct{}), release: make(chan struct{})}
	p.settled.L = &p.mu
	close(p.thaw)
	close(p.release)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		if p.frozen {
			close(p.thaw)
			p.frozen = false
		}
		if p.stalled {
			close(p.release)
			p.stalled = false
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Freeze stops every byte in both directions, on open connections and on
// new ones, without closing anything.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thaw = make(chan struct{})
	}
}

// Thaw closes the connections that were frozen, as a peer finally gives
// up on them, and lets new ones through again.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		return
	}
	for c := range p.conns {
		c.Close()
	}
	p.frozen = false
	close(p.thaw)
}

// Stall holds every byte read from now on, in both directions, on open
// connections and on new ones, until Release. Nothing is dropped or
// closed.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled = true
		p.release = make(chan struct{})
	}
}

// Held returns how many reads, each one write by a peer, the stall
// holds.
func (p *Proxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// Release delivers what the stall held and lets traffic flow again. It
// returns once every held read has been written on.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		return
	}
	p.stalled = false
	close(p.release)
	for p.held > 0 {
		p.settled.Wait()
	}
}

// Refuse closes every open connection and, until Admit, every new one
// as soon as it is made, as a path whose far end is down does.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = true
	for c := range p.conns {
		c.Close()
	}
}

// Admit lets new connections through again after Refuse.
func (p *Proxy) Admit() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = false
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	p.track(client)
	defer p.untrack(client)
	p.mu.Lock()
	thaw, refusing := p.thaw, p.refusing
	p.mu.Unlock()
	if refusing {
		client.Close()
		return
	}
	<-thaw // a connection made while frozen waits, silent
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(server)
	defer p.untrack(server)
	var pair sync.WaitGroup
	pair.Add(2)
	go func() { defer pair.Done(); p.copy(server, client) }()
	go func() { defer pair.Done(); p.copy(client, server) }()
	pair.Wait()
}

// copy forwards src to dst; while frozen it drops what it reads.
func (p *Proxy) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			frozen, stalled, release := p.frozen, p.stalled, p.release
			if stalled {
				p.held++
			}
			p.mu.Unlock()
			if stalled {
				<-release
			}
			if !frozen {
				_, werr := dst.Write(buf[:n])
				p.mu.Lock()
				if stalled {
					p.held--
					p.settled.Broadcast()
				}
				p.mu.Unlock()
				if werr != nil {
					return
				}
			} else if stalled {
				p.mu.Lock()
				p.held--
				p.settled.Broadcast()
				p.mu.Unlock()
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}
