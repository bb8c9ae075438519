package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer/keyrate"
)

// Server accepts WebSocket connections and runs their consumers. Layer is
// required; every other field has a working zero value. A Server must not
// be copied after first use.
type Server struct {
	// Layer carries the connections' channel and group traffic. Required.
	Layer channellayer.Layer
	// Logger receives connection events. Default slog.Default().
	Logger *slog.Logger
	// OriginPatterns lists the hosts, as path.Match patterns, whose pages
	// may open a connection, besides the server's own host (which is
	// always allowed). Default: only the server's own host. The router
	// applies the same list to state-changing HTTP requests.
	OriginPatterns []string
	// QueueBytes bounds what may wait for one client: the payloads of the
	// messages and frames queued for it, and of those its writer has taken
	// but not yet written, plus a small fixed cost per message (its queue
	// slot, under 100 bytes). A client whose queue would pass it is too
	// slow and is closed with StatusTooSlow; a burst that the client
	// drains in time is not. A single message larger than QueueBytes is
	// let in when nothing else waits. A resuming client's replay (at most
	// MaxReplay messages and MaxReplayBytes) is not counted. Default 1 MiB.
	QueueBytes int
	// ReadLimit is the largest client frame in bytes; a larger one closes
	// the connection with StatusTooBig. Default 64 KiB.
	ReadLimit int64
	// Compression offers WebSocket clients permessage-deflate without
	// context takeover: messages of 512 bytes or more are compressed, each
	// on its own, so a connection holds no compression state (with
	// context takeover it would hold hundreds of KB), and a group message
	// is compressed once for all its recipients. It costs CPU to save
	// bandwidth, which loopback and fast networks do not need. Default
	// off.
	Compression bool
	// WriteTimeout bounds one write to a client: a batch of the frames
	// that were waiting for it, or a control frame. A client that takes
	// longer (up to half as long again: a WebSocket's deadline is renewed
	// only every WriteTimeout/2) is dropped. It also bounds how long
	// WaitForRoom waits. Default 10s.
	WriteTimeout time.Duration
	// WriteDelay gathers the frames of a busy client into fewer writes: a
	// frame for a client written to less than WriteDelay ago (or less
	// than four WriteDelays ago, if that write carried several frames)
	// waits WriteDelay, and every frame that arrives meanwhile goes out
	// with it, in one write. A client that gets many messages a second
	// thus costs a system call per WriteDelay or so rather than one per
	// message, for at most WriteDelay of latency; a frame for a quiet
	// client is written at once. Default 10ms; negative: never wait.
	WriteDelay time.Duration
	// MaxConnections caps the open connections of this instance; past it
	// new ones are refused with 503 before the upgrade. Default 10000.
	MaxConnections int
	// MaxConnectionsPerAddr caps the open connections from one client
	// address (see ClientAddr); past it new ones get 429. Default 100.
	MaxConnectionsPerAddr int
	// ClientAddr names the client of a request, for MaxConnectionsPerAddr
	// and logs. Default: the host of r.RemoteAddr. Behind a proxy, set it
	// to read the forwarded address from proxies you trust.
	ClientAddr func(r *http.Request) string
	// RateLimit is how many frames per second a client may send on
	// average, and RateBurst how many at once; a client over it is closed
	// with StatusPolicyViolation. Defaults 20 and 40.
	RateLimit float64
	RateBurst int
	// MaxGroups caps the groups one connection may be in (Conn.Join).
	// Default 100.
	MaxGroups int
	// PublicGroups are the patterns of groups any client may join, with or
	// without a token. Default none: only the groups a token names.
	PublicGroups []string
	// PingInterval is how often a connection that has sent nothing is
	// pinged, and PingTimeout how long the answer may take before the
	// connection is dropped as dead. Defaults 25s and 10s; a negative
	// PingInterval turns pings off.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// MaxReplay caps the messages replayed to one resuming client; a
	// client that missed more gets a Resync frame. Default 10000.
	MaxReplay int
	// MaxReplayBytes caps the bytes (counted as for QueueBytes) of replay
	// that may wait for one connection: a replay that would take the
	// connection's unwritten replay past it is not sent, and the client
	// gets a Resync frame instead, as for more than MaxReplay messages.
	// It is at most half of QueueBytes, which is also the default, so a
	// replay never fills a client's queue nor takes longer to write than
	// its live traffic may.
	MaxReplayBytes int
	// ReplayRate is how many replays per second the connections of one
	// client address (see ClientAddr) may ask for on average, and
	// ReplayBurst how many at once. A request that connects with a resume
	// position (the "since" query parameter or a Last-Event-ID header)
	// takes one, whatever the number of groups it resumes; over the limit
	// it is refused with 429 and Retry-After before the upgrade. Frames
	// that ask for a replay take one each (see Conn.AllowReplay).
	// Defaults 2 and 20; a negative ReplayRate turns the limit off.
	ReplayRate  float64
	ReplayBurst int
	// Handoff, when set, is called with the request of every connection
	// s admits, WebSocket or event stream, right after admission; the
	// function it returns is called when s lets go of the connection
	// (after the WebSocket closed, when the stream ends, or when the
	// upgrade failed). A server that counts and limits its plain HTTP
	// connections (router.HTTPConns) uses it to count these as s's
	// instead, so that each connection counts once. Default: none.
	Handoff func(r *http.Request) (done func())

	admitted     int // connections from admission to end, under mu
	refused      atomic.Int64
	ids          atomic.Uint64
	open         atomic.Int64
	slow         atomic.Int64
	unhandled    atomic.Int64
	notForwarded atomic.Int64
	drops        dropLog // logs what unhandled counts
	droppedSlow  atomic.Int64
	droppedGone  atomic.Int64
	pressed      atomic.Int64 // connections with more than half of QueueBytes queued
	replayRated  atomic.Int64 // replays refused by ReplayRate
	replayLarge  atomic.Int64 // replays past MaxReplayBytes, answered with a resync

	replayOnce sync.Once
	replayLim  *keyrate.Limiter // nil: no limit

	roomMu sync.Mutex
	room   chan struct{} // closed when a pressed connection drains; nil until someone waits

	mu       sync.Mutex
	conns    map[*Conn]struct{}
	perAddr  map[string]int
	routes   map[string]*routeStats
	draining bool
	deflate  deflater // compressed messages, shared by every connection
	wg       sync.WaitGroup
}

// Route is what the router found for one WebSocket request.
type Route struct {
	// Pattern is the route's URL pattern, used to label its counters.
	Pattern string
	// Params are the URL path parameters the pattern matched.
	Params map[string]string
	// New makes the connection's consumer.
	New Constructor
}

// Stats are counters of a Server's connections.
type Stats struct {
	Open            int64 // connections open now
	Refused         int64 // connections refused by MaxConnections or MaxConnectionsPerAddr
	SlowDisconnects int64 // clients closed with StatusTooSlow
	// ReplaysRefused counts the replays not sent, by reason.
	ReplaysRefused struct {
		RateLimited int64 // over ReplayRate: 429 at connect, an error frame after
		TooLarge    int64 // past MaxReplayBytes: a Resync frame instead
	}
	// Dropped counts messages that reached a connection and were not
	// written, by reason.
	Dropped struct {
		NoHandler int64 // a layer message whose type has no handler
		// NotForwarded counts layer messages of a type the connection's
		// route does not forward (Routes.Forward, Forwarder.Types).
		NotForwarded int64
		Slow         int64 // queued for a client closed as too slow
		Closed       int64 // arrived while the connection was closing
	}
	// Routes has the counters of each route pattern.
	Routes map[string]RouteStats
}

// RouteStats are one route's counters.
type RouteStats struct {
	Open       int64 // connections open now
	Accepted   int64 // connections accepted in all
	Received   int64 // frames received from clients
	Sent       int64 // frames written to clients
	Dispatched int64 // layer messages handed to a handler
}

type routeStats struct {
	open, accepted, received, sent, dispatched atomic.Int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{Open: s.open.Load(), Refused: s.refused.Load(), SlowDisconnects: s.slow.Load()}
	st.Dropped.NoHandler = s.unhandled.Load()
	st.Dropped.NotForwarded = s.notForwarded.Load()
	st.Dropped.Slow = s.droppedSlow.Load()
	st.Dropped.Closed = s.droppedGone.Load()
	st.ReplaysRefused.RateLimited = s.replayRated.Load()
	st.ReplaysRefused.TooLarge = s.replayLarge.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Routes = make(map[string]RouteStats, len(s.routes))
	for p, r := range s.routes {
		st.Routes[p] = RouteStats{
			Open: r.open.Load(), Accepted: r.accepted.Load(), Received: r.received.Load(),
			Sent: r.sent.Load(), Dispatched: r.dispatched.Load(),
		}
	}
	return st
}

func (s *Server) route(pattern string) *routeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes == nil {
		s.routes = make(map[string]*routeStats)
	}
	r := s.routes[pattern]
	if r == nil {
		r = &routeStats{}
		s.routes[pattern] = r
	}
	return r
}

func (s *Server) compressionMode() websocket.CompressionMode {
	if s.Compression {
		return websocket.CompressionNoContextTakeover
	}
	return websocket.CompressionDisabled
}

func (s *Server) maxReplay() int { return orDefault(s.MaxReplay, 10000) }

func (s *Server) maxReplayBytes() int {
	half := s.queueBytes() / 2
	if s.MaxReplayBytes <= 0 || s.MaxReplayBytes > half {
		return half
	}
	return s.MaxReplayBytes
}

// allowReplay takes a replay from addr's bucket, or reports how long
// until there is one.
func (s *Server) allowReplay(addr string) (bool, time.Duration) {
	s.replayOnce.Do(func() {
		if s.ReplayRate < 0 {
			return
		}
		r := s.ReplayRate
		if r == 0 {
			r = 2
		}
		s.replayLim = keyrate.New(r, orDefault(s.ReplayBurst, 20), 0)
	})
	if s.replayLim == nil {
		return true, 0
	}
	ok, wait := s.replayLim.Allow(addr)
	if !ok {
		s.replayRated.Add(1)
	}
	return ok, wait
}

// asksReplay reports whether r connects with a resume position.
func asksReplay(r *http.Request) bool {
	return r.Header.Get("Last-Event-ID") != "" || r.URL.Query().Get("since") != ""
}

func (s *Server) queueBytes() int {
	if s.QueueBytes > 0 {
		return s.QueueBytes
	}
	return 1 << 20
}

// WaitForRoom is for producers that can wait, such as a reader of a
// durable log: call it before each send to pace the sends to what the
// clients take. It returns nil at once when no connection of s has more
// than half of QueueBytes queued; otherwise it waits until none has, or
// until WriteTimeout has passed since it began waiting, and returns nil;
// if ctx ends first it returns ctx.Err(). A connection that has had more
// than half queued for WriteTimeout no longer counts: a client that stays
// that full is slow, and must not stall everyone; at the producers' pace
// its queue reaches QueueBytes and it is cut. When nobody is pressed it
// costs one atomic load.
func (s *Server) WaitForRoom(ctx context.Context) error {
	if s.pressed.Load() <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	timeout := time.NewTimer(s.writeTimeout())
	defer timeout.Stop()
	for {
		// Take the signal before looking, so that a drain between the two
		// is not missed.
		room := s.roomSignal()
		if s.pressed.Load() <= 0 {
			return nil
		}
		select {
		case <-room:
		case <-timeout.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// roomSignal returns a channel closed at the next roomMade.
func (s *Server) roomSignal() <-chan struct{} {
	s.roomMu.Lock()
	defer s.roomMu.Unlock()
	if s.room == nil {
		s.room = make(chan struct{})
	}
	return s.room
}

// roomMade wakes WaitForRoom: a connection fell below half of QueueBytes.
func (s *Server) roomMade() {
	s.roomMu.Lock()
	defer s.roomMu.Unlock()
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ErrDraining is the reason new connections are refused during Shutdown.
var ErrDraining = errors.New("consumer: server is shutting down")

// Serve runs one connection: it builds the consumer, registers its
// channel, calls Connect and upgrades. A WebSocket is then served on a
// goroutine the Server owns (Shutdown waits for it), and Serve returns at
// once, so that the HTTP server lets go of the request and of its
// handler's stack. A request for an event stream (IsEventStream) is
// served as one, until it ends, before Serve returns: the same consumer,
// queue, limits and counters, with frames written as server-sent events
// and no frames from the client.
func (s *Server) Serve(w http.ResponseWriter, r *http.Request, route Route) {
	if s.Layer == nil {
		s.logger().Error("consumer: Server.Layer is nil")
		refuse(w, http.StatusInternalServerError, CodeInternal, "server misconfigured")
		return
	}
	addr := s.clientAddr(r)
	if asksReplay(r) {
		if ok, wait := s.allowReplay(addr); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(keyrate.RetryAfter(wait)))
			http.Error(w, "too many replays asked for from your address; retry later", http.StatusTooManyRequests)
			return
		}
	}
	s.mu.Lock()
	switch {
	case s.draining:
		s.mu.Unlock()
		refuse(w, http.StatusServiceUnavailable, CodeUnavailable, "server is shutting down; reconnect")
		return
	case s.admitted >= orDefault(s.MaxConnections, 10000):
		s.mu.Unlock()
		s.refused.Add(1)
		refuse(w, http.StatusServiceUnavailable, CodeUnavailable, "too many connections on this instance; try again later")
		return
	case s.perAddr[addr] >= orDefault(s.MaxConnectionsPerAddr, 100):
		s.mu.Unlock()
		s.refused.Add(1)
		refuse(w, http.StatusTooManyRequests, CodeRateLimited, "too many connections from your address")
		return
	}
	if s.perAddr == nil {
		s.perAddr = make(map[string]int)
	}
	s.perAddr[addr]++
	s.admitted++
	s.wg.Add(1)
	s.mu.Unlock()
	var handBack func()
	if s.Handoff != nil {
		handBack = s.Handoff(r)
	}
	// The connection is s's now, and keeps deadlines of its own: a
	// WebSocket's writes are bounded by wsConn and its liveness by pings,
	// an event stream's writes by sseTransport. The HTTP server's read
	// deadline, meant for plain requests, must not end it: for an event
	// stream the server reads in the background all along, and a read
	// that times out cancels the request. (Hijacking clears the
	// deadlines too, but Connect comes first.)
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	id := s.ids.Add(1)
	c := &Conn{
		id:       id,
		addr:     addr,
		req:      r,
		params:   route.Params,
		stats:    s.route(route.Pattern),
		layer:    s.Layer,
		identity: IdentityFrom(r.Context()),
		srv:      s,
		ctx:      ctx,
		cancel:   cancel,
		handBack: handBack,
	}
	// Until the connection is handed to run, returning ends it here.
	handedOff := false
	defer func() {
		if !handedOff {
			s.finish(c, -1)
		}
	}()
	name, err := s.Layer.NewChannel(c)
	if err != nil {
		c.Logger().Error("consumer: no channel for connection", "err", err)
		refuse(w, http.StatusServiceUnavailable, CodeUnavailable, "channel layer unavailable; try again later")
		return
	}
	c.channel = name
	c.cons = route.New(r)

	var closeErr websocket.CloseError
	switch err := c.cons.Connect(ctx, c); {
	case err == nil:
	case errors.As(err, &closeErr):
		c.Close(closeErr.Code, closeErr.Reason)
	default:
		var rej *RejectError
		if errors.As(err, &rej) {
			refuse(w, rej.status(), rej.Code, rej.Reason)
			return
		}
		c.Logger().Error("consumer: connect failed", "err", err)
		refuse(w, http.StatusInternalServerError, CodeInternal, "connect failed")
		return
	}

	if IsEventStream(r) {
		if !OriginAllowed(r, s.OriginPatterns) {
			c.Logger().Info("consumer: event stream from a foreign origin refused")
			refuse(w, http.StatusForbidden, CodeForbidden, "origin not allowed")
			return
		}
		st, err := newSSE(w, s.writeTimeout(), cancel)
		if err != nil {
			c.Logger().Debug("consumer: event stream failed at start", "err", err)
			return
		}
		c.mu.Lock()
		st.def, st.pos = c.def, slices.Clone(c.seeds)
		c.mu.Unlock()
		// The stream is the response: the handler serves it to the end.
		handedOff = true
		c.t = st
		s.run(c, func() error {
			select {
			case <-r.Context().Done():
				return r.Context().Err()
			case <-ctx.Done():
				return nil
			}
		})
		return
	}

	up := &upgrader{ResponseWriter: w, timeout: s.writeTimeout()}
	ws, err := websocket.Accept(up, r, &websocket.AcceptOptions{
		OriginPatterns:  s.OriginPatterns,
		CompressionMode: s.compressionMode(),
		OnPongReceived:  func(_ context.Context, p []byte) { c.pongReceived(p) },
	})
	if err != nil {
		// Accept has refused the handshake (403 for a foreign origin);
		// the client gets a JSON refusal, the log Accept's reason.
		c.Logger().Info("consumer: upgrade refused", "err", err)
		if up.refused != nil {
			refuse(w, up.refused.status, "", handshakeRefusal(up.refused.status))
		}
		return
	}
	limit := s.ReadLimit
	if limit <= 0 {
		limit = 64 << 10
	}
	ws.SetReadLimit(limit)
	// The WebSocket lives on in a goroutine of its own, which Shutdown
	// waits for, and the handler returns: the HTTP server then lets go of
	// the request's state and of this goroutine's stack, which the
	// handshake grew to several times what reading needs.
	handedOff = true
	t := wsTransport{ws: ws, nc: up.nc}
	if s.Compression && up.Header().Get("Sec-WebSocket-Extensions") != "" {
		// Accept agreed to permessage-deflate, the only extension offered.
		t.deflate = &s.deflate
	}
	c.t = t
	go s.run(c, func() error { return s.read(c, ws) })
}

// run serves an accepted connection until it ends, then releases it.
func (s *Server) run(c *Conn, readLoop func() error) {
	status := websocket.StatusCode(-1)
	defer func() { s.finish(c, status) }()
	s.track(c, true)
	defer s.track(c, false)
	if c.identity != nil && !c.identity.Expires.IsZero() {
		expiry := time.AfterFunc(time.Until(c.identity.Expires), func() {
			c.Close(StatusTokenExpired, "token expired")
		})
		defer expiry.Stop()
	}
	c.stats.accepted.Add(1)
	c.stats.open.Add(1)
	defer c.stats.open.Add(-1)

	if s.PingInterval >= 0 {
		c.mu.Lock()
		c.timer = time.AfterFunc(orDefault(s.PingInterval, 25*time.Second), c.tick)
		c.mu.Unlock()
	}
	c.start()
	readErr := readLoop()
	// The reader is done: the peer closed, the connection broke, or our
	// own close handshake finished. Stop the writer and release the socket.
	c.t.release(readErr)
	c.abort()
	c.end()

	c.mu.Lock()
	byUs, code := c.byUs, c.closeCode
	c.mu.Unlock()
	switch {
	case byUs:
		status = code
	default:
		status = c.t.peerStatus(readErr)
	}
	c.Logger().Debug("consumer: disconnected", "status", int(status), "by_server", byUs)
}

// finish releases what Serve took for the connection, in reverse order:
// the consumer's Disconnect, the channel, the context, the admission.
func (s *Server) finish(c *Conn, status websocket.StatusCode) {
	if c.cons != nil {
		c.cons.Disconnect(c, status)
	}
	if c.channel != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Layer.CloseChannel(ctx, c.channel); err != nil {
			c.Logger().Warn("consumer: closing channel", "err", err)
		}
		cancel()
	}
	c.cancel()
	if c.handBack != nil {
		c.handBack()
	}
	s.mu.Lock()
	s.admitted--
	if s.perAddr[c.addr]--; s.perAddr[c.addr] <= 0 {
		delete(s.perAddr, c.addr)
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) track(c *Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[*Conn]struct{})
	}
	if add {
		s.conns[c] = struct{}{}
		s.open.Add(1)
		if s.draining {
			c.Close(StatusServiceRestart, "server shutting down")
		}
	} else {
		delete(s.conns, c)
		s.open.Add(-1)
	}
}

// read is the connection's reading loop. It returns the error that ended
// it.
func (s *Server) read(c *Conn, ws *websocket.Conn) error {
	limit := s.RateLimit
	if limit <= 0 {
		limit = 20
	}
	var lim *rate.Limiter // made at the first frame: many clients never send one
	for {
		kind, data, err := ws.Read(context.Background())
		if err != nil {
			return err
		}
		c.active.Store(true)
		if lim == nil {
			lim = rate.NewLimiter(rate.Limit(limit), orDefault(s.RateBurst, 40))
		}
		if !lim.Allow() {
			c.Close(StatusPolicyViolation, fmt.Sprintf("rate limit: more than %g frames per second", limit))
			continue
		}
		switch {
		case kind != websocket.MessageText:
			c.Close(StatusUnsupportedData, "binary frames are not supported; send JSON text")
			continue
		case !utf8.Valid(data):
			c.Close(StatusInvalidPayload, "text frame is not valid UTF-8")
			continue
		}
		c.stats.received.Add(1)
		if err := c.cons.Receive(c.ctx, c, kind, data); err != nil {
			s.fail(c, "receive", err)
		}
	}
}

func (s *Server) writeTimeout() time.Duration { return orDefault(s.WriteTimeout, 10*time.Second) }

func (s *Server) writeDelay() time.Duration {
	if s.WriteDelay == 0 {
		return 10 * time.Millisecond
	}
	return s.WriteDelay
}

// write is the connection's only writer, started by Conn.kick when there
// is something to write. It dispatches layer messages to the consumer and
// writes frames, in queue order, and performs the close handshake when the
// connection is closed from our side. It encodes everything it takes into
// one batch and sends the batch when the queue is empty: one write and one
// deadline for all the frames that were waiting. It ends when nothing is
// left, so an idle connection has no writer.
func (s *Server) write(c *Conn) {
	defer c.writers.Done()
	b := getBatch()
	defer putBatch(b)
	var spare []item
	var written int64 // frames sent by this writer
	var done int      // what the items finished with since the last report cost
	f, canForward := c.cons.(forwarder)
	var fwdType string // the last message type looked up, and whether it is forwarded
	var fwd bool
	for {
		if c.ctx.Err() != nil {
			return
		}
		t := c.take(spare, b.empty(), written, done)
		done = 0
		switch {
		case t.stop:
			return
		case t.close:
			if !b.empty() {
				_ = s.flush(c, b) // what was taken before the close goes first
			}
			c.mu.Lock()
			code, why := c.closeCode, c.closeWhy
			c.mu.Unlock()
			_ = c.t.close(code, why)
			return
		}
		if t.ping {
			c.t.keepAlive(b, t.seq)
		}
		if len(t.items) == 0 {
			// Nothing more came while the batch was being made: send it.
			written += b.frames
			if !s.flush(c, b) {
				return
			}
			spare = t.items
			continue
		}
		var dispatched int64
		for i, it := range t.items {
			t.items[i] = item{}
			done += it.cost()
			if it.msgType != "" {
				dispatched++
				if it.msgType != fwdType {
					fwdType, fwd = it.msgType, canForward && f.forwards(it.msgType)
				}
				if !fwd {
					c.dispatching, c.inline = it.group, b
					err := c.cons.Dispatch(c.ctx, c, channellayer.MessageFromID(it.msgType, it.id, it.data))
					c.dispatching, c.inline = "", nil
					if err != nil {
						s.fail(c, "dispatch", err)
					}
					continue
				}
				// Write what ForwardToClient would queue: the same bytes.
			}
			c.t.frame(b, it.group, it.id, it.data)
			if b.size >= maxBatch {
				written += b.frames
				if !s.flush(c, b) {
					return
				}
				// What this turn wrote no longer waits: a client that
				// drains a long burst must not look as if it held it all.
				c.wrote(done)
				done = 0
			}
		}
		if dispatched > 0 {
			c.stats.dispatched.Add(dispatched)
		}
		spare = t.items
	}
}

// flush sends the writer's batch. A failed write ends the connection.
func (s *Server) flush(c *Conn, b *batch) bool {
	frames := b.frames
	if err := c.t.flush(b); err != nil {
		c.Logger().Debug("consumer: write failed", "err", err)
		c.abort()
		return false
	}
	if frames > 0 {
		c.stats.sent.Add(frames)
	}
	return true
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (s *Server) clientAddr(r *http.Request) string {
	if s.ClientAddr != nil {
		return s.ClientAddr(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) fail(c *Conn, stage string, err error) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		c.Close(ce.Code, ce.Reason)
		return
	}
	c.Logger().Error("consumer: "+stage+" failed", "err", err)
	c.Close(StatusInternalError, "internal error")
}

// Shutdown refuses new connections, closes every open one with
// StatusServiceRestart so clients reconnect elsewhere, and waits until
// their consumers have finished or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for c := range s.conns {
		c.Close(StatusServiceRestart, "server shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	defer s.drops.flush(s.logger())
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.abort()
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}
