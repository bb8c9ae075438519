package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// Kinds of soak client.
const (
	kindResume = "ws-resume"  // WebSocket, several history groups, resumes as herald.js does
	kindProxy  = "ws-proxied" // kindResume on gossip alone, through the TCP proxy
	kindSSE    = "sse-resume" // event stream, resumes with Last-Event-ID
	kindPlain  = "ws-plain"   // WebSocket that never resumes
	kindStall  = "ws-stall"   // stops reading: must be cut with 4008
)

// chaosItem is one thing a client received in a group: a message, or a
// resync.
type chaosItem struct {
	key    msgKey
	id     string
	resync bool
	at     time.Time
}

// chaosConn is one connection of a client.
type chaosConn struct {
	addr    string
	start   time.Time
	since   map[string]string      // the ids it resumed from, by group
	joined  map[string]time.Time   // when it became a member of each group
	items   map[string][]chaosItem // by group, in arrival order
	end     time.Time              // zero while open
	code    int                    // close code the server sent, or -1
	why     string
	noGroup int // resyncs that named no group
	noID    int // history messages without a herald_id
	dropped int // frames dropped as already seen (id at or below the last)
}

// chaosClient is one client of the soak, reconnecting with a small
// jittered backoff to a random instance whenever its connection ends.
type chaosClient struct {
	name   string
	kind   string
	groups []string
	h      *chaosRun
	rng    *rand.Rand

	mu       sync.Mutex
	sessions []*chaosConn
	last     map[string]string // herald_id of the last message per group
}

func (h *chaosRun) startClients(ctx context.Context, wg *sync.WaitGroup) {
	add := func(kind string, n int, groups ...string) {
		for i := range n {
			c := &chaosClient{
				name: fmt.Sprintf("%s-%d", kind, i), kind: kind, groups: groups, h: h,
				rng:  rand.New(rand.NewPCG(h.cfg.seed, uint64(len(h.clients)+100))),
				last: map[string]string{},
			}
			h.clients = append(h.clients, c)
			wg.Add(1)
			go func() { defer wg.Done(); c.run(ctx) }()
		}
	}
	add(kindResume, 4, chaosHistoryGroups...)
	add(kindProxy, 1, "gossip")
	add(kindSSE, 2, "gossip")
	add(kindPlain, 3, "gossip", "chaos-h1", chaosLive)
	add(kindStall, 1, "gossip", chaosSlow)
}

func (c *chaosClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		addr := c.h.addrs[c.rng.IntN(len(c.h.addrs))]
		var err error
		switch c.kind {
		case kindSSE:
			err = c.sse(ctx, addr)
		case kindProxy:
			err = c.ws(ctx, c.h.proxy.Addr())
		default:
			err = c.ws(ctx, addr)
		}
		_ = err
		// Small jittered backoff before the next attempt.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(20+c.rng.IntN(200)) * time.Millisecond):
		}
	}
}

func (c *chaosClient) resumes() bool { return c.kind != kindPlain && c.kind != kindStall }

// newSession records a connection and returns it, with the ids to resume
// from.
func (c *chaosClient) newSession(addr string) (*chaosConn, map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &chaosConn{addr: addr, start: time.Now(), joined: map[string]time.Time{}, items: map[string][]chaosItem{}, code: -1, since: map[string]string{}}
	if c.resumes() {
		for g, id := range c.last {
			s.since[g] = id
		}
	}
	c.sessions = append(c.sessions, s)
	return s, s.since
}

// dropSession forgets a connection that was never made.
func (c *chaosClient) dropSession(s *chaosConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.sessions); n > 0 && c.sessions[n-1] == s {
		c.sessions = c.sessions[:n-1]
	}
}

func (c *chaosClient) endSession(s *chaosConn, code int, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.end, s.code, s.why = time.Now(), code, why
}

func (c *chaosClient) joined(s *chaosConn, g string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := s.joined[g]; !ok {
		s.joined[g] = time.Now()
	}
}

// receive records one frame; eventID is the event stream's id field.
func (c *chaosClient) receive(s *chaosConn, data []byte, eventID string) {
	var f frame
	if json.Unmarshal(data, &f) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	switch f.Type {
	case "resync":
		var g string
		if len(f.Group) == 0 || json.Unmarshal(f.Group, &g) != nil || g == "" {
			// No group named: it can only mean all of them.
			s.noGroup++
			for _, g := range c.groups {
				s.items[g] = append(s.items[g], chaosItem{resync: true, at: now})
			}
			return
		}
		s.items[g] = append(s.items[g], chaosItem{resync: true, at: now})
		return
	case "subscribed":
		var g string
		if json.Unmarshal(f.Group, &g) == nil {
			if _, ok := s.joined[g]; !ok {
				s.joined[g] = now
			}
		}
		return
	}
	k, g, ok := f.key()
	if !ok {
		return
	}
	id := f.ID
	if id == "" {
		id = eventID
	}
	if id == "" && slices.Contains(chaosHistoryGroups, g) {
		s.noID++
	}
	if c.resumes() && id != "" {
		// herald.js: drop what is at or below the last id of the group.
		if last, ok := c.last[g]; ok {
			a, err1 := channellayer.ParseID(id)
			b, err2 := channellayer.ParseID(last)
			if err1 == nil && err2 == nil && a.Compare(b) <= 0 {
				s.dropped++
				return
			}
		}
		c.last[g] = id
	}
	s.items[g] = append(s.items[g], chaosItem{key: k, id: id, at: now})
}

// ws runs one WebSocket connection to addr until it ends.
func (c *chaosClient) ws(ctx context.Context, addr string) error {
	s, since := c.newSession(addr)
	u := "ws://" + addr + "/notifications/"
	if id := since["gossip"]; id != "" {
		u += "?since=" + url.QueryEscape(id)
	}
	opts := &websocket.DialOptions{}
	if c.kind == kindStall {
		// A small receive buffer, so that what the client does not read
		// backs up into the server soon.
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
			Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
				})
			},
		}).DialContext}}
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, _, err := websocket.Dial(dctx, u, opts)
	cancel()
	if err != nil {
		c.dropSession(s)
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	c.joined(s, "gossip") // members before the handshake completes
	for _, g := range c.groups {
		if g == "gossip" {
			continue
		}
		sub := map[string]string{"type": "subscribe", "group": g}
		if id := since[g]; id != "" {
			sub["since"] = id
		}
		b, _ := json.Marshal(sub)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.Write(wctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			c.endSession(s, -1, "subscribe: "+err.Error())
			return err
		}
	}
	if c.kind == kindStall {
		return c.stall(ctx, s, conn)
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			c.endSession(s, int(websocket.CloseStatus(err)), err.Error())
			return err
		}
		c.receive(s, data, "")
	}
}

// stall reads until the client is a member of its groups, then reads
// nothing for 6-12 s, then drains the connection to see how the server
// ended it.
func (c *chaosClient) stall(ctx context.Context, s *chaosConn, conn *websocket.Conn) error {
	for len(c.joinedGroups(s)) < len(c.groups) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, data, err := conn.Read(rctx)
		cancel()
		if err != nil {
			c.endSession(s, int(websocket.CloseStatus(err)), err.Error())
			return err
		}
		c.receive(s, data, "")
	}
	select {
	case <-ctx.Done():
		c.endSession(s, -1, "test over")
		return ctx.Err()
	case <-time.After(time.Duration(6000+c.rng.IntN(6000)) * time.Millisecond):
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, err := conn.Read(rctx)
		cancel()
		if err != nil {
			c.endSession(s, int(websocket.CloseStatus(err)), err.Error())
			return err
		}
	}
}

func (c *chaosClient) joinedGroups(s *chaosConn) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var gs []string
	for g := range s.joined {
		gs = append(gs, g)
	}
	return gs
}

// sse runs one event stream to addr until it ends.
func (c *chaosClient) sse(ctx context.Context, addr string) error {
	s, since := c.newSession(addr)
	var st resumeStream
	st, err := dialResumeSSE(ctx, addr, since["gossip"])
	if err != nil {
		c.dropSession(s)
		return err
	}
	defer st.kill()
	stop := context.AfterFunc(ctx, st.kill)
	defer stop()
	c.joined(s, "gossip")
	for {
		data, id, err := st.next(ctx)
		if err != nil {
			code := -1
			var sc *serverClose
			if errors.As(err, &sc) {
				code = sc.code
			}
			c.endSession(s, code, err.Error())
			return err
		}
		c.receive(s, data, id)
	}
}

// joinedAll reports whether the client's current connection is a member
// of all its groups.
func (c *chaosClient) joinedAll() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sessions) == 0 {
		return false
	}
	s := c.sessions[len(c.sessions)-1]
	return s.end.IsZero() && len(s.joined) == len(c.groups)
}

func (c *chaosClient) connectedNow() bool {
	if c.kind == kindStall {
		return true
	}
	return c.joinedAll()
}

// hasMarkers reports whether the client received every marker of its
// groups: for a resuming client on any connection, for a plain one on its
// current connection.
func (c *chaosClient) hasMarkers(markers []msgKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range markers {
		g := m.src
		if m.src == postSrc {
			g = "gossip"
		}
		if !slices.Contains(c.groups, g) {
			continue
		}
		found := false
		for i := len(c.sessions) - 1; i >= 0 && !found; i-- {
			s := c.sessions[i]
			for _, it := range s.items[g] {
				if it.key == m && !it.resync {
					found = true
					break
				}
			}
			if !c.resumes() {
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (c *chaosClient) snapshot() []*chaosConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*chaosConn, len(c.sessions))
	for i, s := range c.sessions {
		cp := *s
		cp.items = map[string][]chaosItem{}
		for g, its := range s.items {
			cp.items[g] = slices.Clone(its)
		}
		cp.joined = map[string]time.Time{}
		for g, at := range s.joined {
			cp.joined[g] = at
		}
		out[i] = &cp
	}
	return out
}
