package consumer

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// ErrClosed is returned by Send on a connection that is closing.
var ErrClosed = errors.New("consumer: connection closed")

// Conn is one client connection as its consumer sees it. It is the
// groups.Member of its channel: layer messages are queued by Deliver and
// handed to the consumer's Dispatch on the connection's writer.
type Conn struct {
	id       uint64
	addr     string // the client's, for MaxConnectionsPerAddr
	channel  string
	req      *http.Request
	params   map[string]string
	layer    channellayer.Layer
	log      atomic.Pointer[slog.Logger] // see Logger
	srv      *Server
	cons     Consumer
	stats    *routeStats
	identity *Identity   // nil: anonymous
	active   atomic.Bool // the client sent something since the last ping tick
	groups   []string    // joined through Join, guarded by mu

	t      transport       // the WebSocket or the event stream; set before run
	ctx    context.Context // ends when the connection is over
	cancel context.CancelFunc
	// handBack returns the connection to the plain HTTP count (see
	// Server.Handoff), if it still has one.
	handBack func()

	// The outbound queue: layer messages to dispatch and frames to write,
	// in arrival order. The writer swaps it out whole, so producers never
	// wait on a write. There is a writer goroutine only while there is
	// something to write: the first push into an empty queue starts it,
	// and it ends when the queue is empty and everything taken has been
	// sent. queued is the cost of the items queued or held, and of those
	// the writer took and has not yet written; exempt is the part of it
	// that a resume's replay may still hold, which the bound
	// (srv.queueBytes()) does not count. pressed says the counted part is
	// above half of the bound, since pressedAt; it is counted in
	// srv.pressed until it ends or, if it lasts WriteTimeout (excused,
	// when pressTimer fires), until then: a client that stays that full
	// must not hold producers back.
	mu           sync.Mutex
	queue        []item
	queued       int
	exempt       int
	pressed      bool
	excused      bool
	pressedAt    time.Time
	pressTimer   *time.Timer
	writer       func()         // runs srv.write(c)
	lastWrite    time.Time      // when the last writer that wrote finished
	lastFrames   int64          // how many frames that writer wrote
	delayed      *time.Timer    // starts a writer that must wait for WriteDelay
	writers      sync.WaitGroup // the writer, while it runs or is about to
	writing      bool           // a writer runs
	started      bool           // the transport is ready: writers may run
	ended        bool           // the connection is over: no writer may start
	closing      bool
	closeStarted bool // the writer took the close: nothing more to write
	closeCode    websocket.StatusCode
	closeWhy     string
	byUs         bool // we started the close

	// Keep-alive: a timer instead of a goroutine, so that an idle
	// connection holds none but its reader. pingDue asks the writer for a
	// keep-alive; awaiting is set while a ping's answer is due; pingSeq is
	// the payload of the last ping and pong says its answer came.
	timer    *time.Timer
	pingDue  bool
	awaiting bool
	pingSeq  atomic.Uint32
	pong     atomic.Bool

	// Resuming: live messages of a group being resumed wait in held until
	// the replay is queued; flowed holds, per group, the first history id
	// the writer took; floor holds, per resumed group, the last id the
	// client has (the resume point or the last replayed id), below which a
	// late live copy is a duplicate.
	held   map[string][]item
	flowed map[string]string
	floor  map[string]channellayer.ID

	// dispatching is the group of the layer message being dispatched, if
	// known, and inline the writer's batch meanwhile. Only the writer
	// reads and writes them.
	dispatching string
	inline      *batch

	// Resume positions the client gave when it connected, guarded by mu:
	// seeds are those of the groups resumed before the transport started,
	// with which an event stream's position vector starts; remembered are
	// those of groups a later subscribe resumes; def is the group a
	// position without one is for.
	seeds      []position
	remembered []position
	def        string
}

type item struct {
	msgType string // non-empty for a layer message to dispatch
	group   string // the group a layer message was sent to, if known
	id      string // its history id, or the id of a frame to write
	data    []byte
}

// itemOverhead is what a queued item costs besides its payload: its slot
// in the queue. Counting it bounds a flood of tiny messages too.
const itemOverhead = int(unsafe.Sizeof(item{}))

// cost is what the item counts against Server.QueueBytes.
func (it *item) cost() int { return len(it.data) + itemOverhead }

// ID returns the connection's id, unique within this process, which every
// log line about the connection carries.
func (c *Conn) ID() uint64 { return c.id }

// Channel returns the connection's channel name on the layer. A backend
// can send to exactly this connection with Layer.Send.
func (c *Conn) Channel() string { return c.channel }

// Layer returns the channel layer the connection lives on.
func (c *Conn) Layer() channellayer.Layer { return c.layer }

// Request returns the HTTP request that opened the connection. Once a
// WebSocket is upgraded the request's handler has returned: its context
// has ended, and a router may reuse what it kept there (chi's route
// context), so use Context and Param instead.
func (c *Conn) Request() *http.Request { return c.req }

// Param returns the URL path parameter name, as matched by the router.
func (c *Conn) Param(name string) string { return c.params[name] }

// Identity returns what the client's token says about it, or nil for an
// anonymous client.
func (c *Conn) Identity() *Identity { return c.identity }

// Errors Join returns, wrapped.
var (
	ErrForbiddenGroup = errors.New("consumer: group not allowed")
	ErrTooManyGroups  = errors.New("consumer: too many groups")
)

// MayJoin reports whether the client may join group: the group matches
// Server.PublicGroups or the patterns of the client's token.
func (c *Conn) MayJoin(group string) bool {
	if matchAny(c.srv.PublicGroups, group) {
		return true
	}
	return c.identity != nil && matchAny(c.identity.Groups, group)
}

// Join adds the connection to group on the layer, if the client may join
// it (MayJoin) and is in fewer than Server.MaxGroups groups. Joining a
// group twice is not an error.
func (c *Conn) Join(ctx context.Context, group string) error {
	if err := channellayer.ValidGroupName(group); err != nil {
		return err
	}
	if !c.MayJoin(group) {
		return fmt.Errorf("%w: %q", ErrForbiddenGroup, group)
	}
	c.mu.Lock()
	if slices.Contains(c.groups, group) {
		c.mu.Unlock()
		return nil
	}
	if max := orDefault(c.srv.MaxGroups, 100); len(c.groups) >= max {
		c.mu.Unlock()
		return fmt.Errorf("%w: at most %d per connection", ErrTooManyGroups, max)
	}
	c.groups = append(c.groups, group)
	c.mu.Unlock()
	err := c.layer.GroupAdd(ctx, group, c.channel)
	if err != nil && !errors.Is(err, channellayer.ErrUnavailable) {
		// The membership did not happen; an unavailable layer keeps it and
		// applies it when it returns.
		c.mu.Lock()
		c.groups = slices.DeleteFunc(c.groups, func(g string) bool { return g == group })
		c.mu.Unlock()
	}
	return err
}

// Leave removes the connection from group. Leaving a group it is not in
// is not an error.
func (c *Conn) Leave(ctx context.Context, group string) error {
	if err := channellayer.ValidGroupName(group); err != nil {
		return err
	}
	c.mu.Lock()
	c.groups = slices.DeleteFunc(c.groups, func(g string) bool { return g == group })
	c.mu.Unlock()
	return c.layer.GroupDiscard(ctx, group, c.channel)
}

// Groups returns the groups joined through Join.
func (c *Conn) Groups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.groups)
}

// Logger returns a logger that tags every line with the connection id.
func (c *Conn) Logger() *slog.Logger {
	if l := c.log.Load(); l != nil {
		return l
	}
	// Made on first use: most connections never log, and a tagged logger
	// costs a few hundred bytes.
	c.log.CompareAndSwap(nil, c.srv.logger().With("conn", c.id))
	return c.log.Load()
}

// Context returns a context that ends when the connection is over.
func (c *Conn) Context() context.Context { return c.ctx }

// Deliver implements groups.Member. It never blocks: when the bytes
// queued for the client would pass Server.QueueBytes the client is too
// slow, and it is closed with StatusTooSlow.
func (c *Conn) Deliver(msgType string, data []byte) {
	c.push(item{msgType: msgType, data: data})
}

// DeliverFrom implements groups.HistoryMember: Deliver, knowing the group
// and the history id.
func (c *Conn) DeliverFrom(group, id, msgType string, data []byte) {
	c.push(item{msgType: msgType, group: group, id: id, data: data})
}

// sendID queues a frame that carries the history id id, which the event
// stream writes as the event's id.
func (c *Conn) sendID(id string, data []byte) bool {
	// Called from Dispatch, on the writer: the group is the dispatched
	// message's, which an event stream's position vector needs.
	return c.push(item{group: c.dispatching, id: id, data: data})
}

// Send queues one text frame for the client. data is written as it is and
// must not be modified afterwards; it may be shared with other
// connections. Send never blocks.
func (c *Conn) Send(data []byte) error {
	if !c.push(item{data: data}) {
		return ErrClosed
	}
	return nil
}

// sendInline writes data as the frame of the layer message being
// dispatched, in the writer's batch, ahead of the messages the writer took
// with it: a resync must reach the client before the replay that follows
// it, which Send would queue after. Off the writer it is Send.
func (c *Conn) sendInline(data []byte) error {
	if c.inline != nil {
		c.t.frame(c.inline, "", "", data)
		return nil
	}
	return c.Send(data)
}

// SendJSON encodes v and queues it as one text frame.
func (c *Conn) SendJSON(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(data)
}

// Close closes the connection with code and reason. It does not block.
func (c *Conn) Close(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason)
}

func (c *Conn) closeLocked(code websocket.StatusCode, reason string) {
	if c.closing {
		return
	}
	c.closing, c.closeCode, c.closeWhy, c.byUs = true, code, reason, true
	if code == StatusTooSlow {
		n := len(c.queue)
		for _, h := range c.held {
			n += len(h)
		}
		c.srv.droppedSlow.Add(int64(n))
	}
	c.queue = nil
	c.held = nil
	c.account(-c.queued)
	c.kick()
}

// account adds delta to the bytes queued for the client, and keeps the
// server's count of pressed connections (those above half of the bound)
// for WaitForRoom. c.mu must be held.
//
// A replay is queued ahead of the live messages that follow it and is
// written first, so what the writer reports written is taken off the
// replay's exemption only once the replay is more than what is left:
// while a replay is being written the bound is looser by at most the
// replay's size, and once everything is written nothing is exempt.
func (c *Conn) account(delta int) {
	c.queued += delta
	if c.queued < 0 || c.closing {
		c.queued = 0 // a writer reporting what it wrote after the close
	}
	c.exempt = min(c.exempt, c.queued)
	if (c.counted() > c.srv.queueBytes()/2) != c.pressed {
		c.press(!c.pressed)
	}
}

// press records that the client became pressed or stopped being so.
// c.mu must be held.
func (c *Conn) press(pressed bool) {
	c.pressed = pressed
	if pressed {
		c.srv.pressed.Add(1)
		c.pressedAt, c.excused = time.Now(), false
		if c.pressTimer == nil {
			c.pressTimer = time.AfterFunc(c.srv.writeTimeout(), c.excuse)
		} else {
			c.pressTimer.Reset(c.srv.writeTimeout())
		}
		return
	}
	c.pressTimer.Stop()
	if !c.excused {
		c.srv.pressed.Add(-1)
		c.srv.roomMade()
	}
}

// excuse stops counting the client as pressed once it has been for
// WriteTimeout: WaitForRoom no longer waits for it, and the producers'
// pace fills its queue up to the bound, where it is cut as too slow.
func (c *Conn) excuse() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pressed || c.excused || time.Since(c.pressedAt) < c.srv.writeTimeout() {
		return // drained meanwhile, or a timer of an earlier pressing
	}
	c.excused = true
	c.srv.pressed.Add(-1)
	c.srv.roomMade()
}

// counted is what of the queue counts against the bound. c.mu must be
// held.
func (c *Conn) counted() int { return c.queued - c.exempt }

// wrote is the writer's report that items costing n bytes were written.
func (c *Conn) wrote(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.account(-n)
	c.mu.Unlock()
}

func (c *Conn) push(it item) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		c.srv.droppedGone.Add(1)
		return false
	}
	n := it.cost()
	// A single item larger than the bound is let in when nothing else
	// waits: it is large, not slow.
	if q := c.counted(); q > 0 && q+n > c.srv.queueBytes() {
		c.srv.slow.Add(1)
		c.srv.droppedSlow.Add(1) // this one; closeLocked counts the queue
		c.Logger().Warn("consumer: client too slow, closing", "queued_bytes", q, "limit", c.srv.queueBytes())
		c.closeLocked(StatusTooSlow, "too slow: outbound queue full")
		return false
	}
	if it.id != "" && it.msgType != "" && c.floor != nil {
		if f, ok := c.floor[it.group]; ok {
			if id, err := channellayer.ParseID(it.id); err == nil && id.Compare(f) <= 0 {
				// Published before the resume point or replayed already, and
				// delivered late: the layer hands a new member messages
				// published before it joined that were still on their way.
				return true
			}
		}
	}
	c.queued += n // account(n), without the call on every message's path
	if !c.pressed && c.counted() > c.srv.queueBytes()/2 {
		c.press(true)
	}
	if it.group != "" && it.msgType != "" {
		if h, ok := c.held[it.group]; ok {
			c.held[it.group] = append(h, it)
			return true
		}
	}
	if c.queue == nil {
		c.queue = getQueue()
	}
	c.queue = append(c.queue, it)
	c.kick()
	return true
}

// kick starts the writer if there is work for it and none runs. c.mu
// must be held.
func (c *Conn) kick() {
	if c.writing || !c.started || c.ended || c.closeStarted {
		return
	}
	if len(c.queue) == 0 && !c.closing && !c.pingDue {
		return
	}
	c.writing = true
	c.writers.Add(1)
	if c.writer == nil {
		c.writer = func() { c.srv.write(c) } // made once: a go statement with arguments allocates
	}
	if !c.busy() {
		go c.writer()
		return
	}
	// The client is busy: let more frames gather, so that they share the
	// next write. The timer starts the writer's goroutine when it fires;
	// none waits meanwhile.
	d := c.srv.writeDelay()
	if c.delayed == nil {
		c.delayed = time.AfterFunc(d, c.writer)
	} else {
		c.delayed.Reset(d)
	}
}

// busy reports whether a frame for the client should wait WriteDelay for
// others to join it: the client was written to less than WriteDelay ago,
// or its last write carried several frames (its messages come faster
// than they are written) less than four WriteDelays ago, which keeps a
// busy client batching through a hiccup. A client whose messages come
// further apart would gain nothing by waiting. c.mu must be held.
func (c *Conn) busy() bool {
	d := c.srv.writeDelay()
	if d <= 0 || c.closing || c.lastWrite.IsZero() {
		return false
	}
	since := time.Since(c.lastWrite)
	return since < d || (c.lastFrames > 1 && since < 4*d)
}

// start lets writers run, once the transport is ready, and starts one if
// something is already queued.
func (c *Conn) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started = true
	c.kick()
}

// end stops the connection's writing and keep-alive, and waits for a
// running writer to finish. The connection must be cancelled first, so
// that the writer does not wait on the client.
func (c *Conn) end() {
	c.mu.Lock()
	c.ended = true
	c.account(-c.queued)
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.delayed != nil && c.delayed.Stop() {
		c.writers.Done() // the writer it was to start will not run
	}
	c.mu.Unlock()
	c.writers.Wait()
}

// turn is what the writer is to do next.
type turn struct {
	items []item // to dispatch or write, in order
	ping  bool   // send a keep-alive
	seq   uint32 // the ping's sequence number
	close bool   // send the close, then end
	stop  bool   // nothing left: end
}

// take hands the writer everything queued, with the keep-alive if one is
// due. idle says the writer holds nothing unsent; then an empty queue
// ends the writer (stop), and the next push starts another. frames is
// how many frames the writer has written, and done what the items it
// finished with since its last report cost.
func (c *Conn) take(spare []item, idle bool, frames int64, done int) turn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if done != 0 {
		c.account(-done)
	}
	if c.closing {
		if c.closeStarted {
			return turn{stop: true} // the peer is gone (ping timeout)
		}
		c.closeStarted = true
		return turn{close: true}
	}
	var t turn
	if c.pingDue {
		c.pingDue = false
		t.ping, t.seq = true, c.pingSeq.Load()
	}
	if len(c.queue) == 0 && !t.ping && idle {
		c.writing = false
		if frames > 0 && c.srv.writeDelay() > 0 {
			c.lastWrite, c.lastFrames = time.Now(), frames
		}
		// An idle connection holds no queue: both buffers go back.
		putQueue(c.queue)
		putQueue(spare)
		c.queue = nil
		return turn{stop: true}
	}
	t.items = c.queue
	for _, it := range t.items {
		if it.id != "" && it.group != "" {
			if c.flowed == nil {
				c.flowed = make(map[string]string)
			}
			if _, ok := c.flowed[it.group]; !ok {
				c.flowed[it.group] = it.id
			}
		}
	}
	// Hand back the previous batch's storage, unless a burst made it
	// larger than the pool's.
	if cap(spare) == queueCap {
		clear(spare)
		c.queue = spare[:0]
	} else {
		c.queue = nil
	}
	return t
}

// queueCap is the capacity of the queue buffers that connections borrow
// while something is queued for them. A burst larger than that grows a
// queue past it, and the grown buffer is not pooled.
const queueCap = 64

var queuePool = sync.Pool{New: func() any { return new([queueCap]item) }}

func getQueue() []item { return queuePool.Get().(*[queueCap]item)[:0] }

func putQueue(q []item) {
	if cap(q) != queueCap {
		return
	}
	clear(q)
	queuePool.Put((*[queueCap]item)(q[:queueCap]))
}

// tick is the keep-alive timer's: every PingInterval it asks the writer to
// ping a WebSocket client that sent nothing since the last tick, and
// PingTimeout later drops the client if the answer has not come. An event
// stream gets a comment every PingInterval.
func (c *Conn) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.closing {
		return
	}
	s := c.srv
	next := orDefault(s.PingInterval, 25*time.Second)
	switch {
	case !c.t.pings():
		c.pingDue = true
	case c.awaiting:
		c.awaiting = false
		if !c.pong.Load() {
			c.Logger().Info("consumer: no answer to ping; dropping the connection")
			c.closing, c.closeCode, c.closeWhy, c.byUs = true, StatusPingTimeout, "ping timeout", true
			c.closeStarted = true // the peer is gone: no close frame
			c.abort()
			return
		}
	case !c.active.Swap(false):
		c.pingSeq.Add(1)
		c.pong.Store(false)
		c.awaiting, c.pingDue = true, true
		next = orDefault(s.PingTimeout, 10*time.Second)
	}
	if c.pingDue {
		c.kick()
	}
	c.timer.Reset(next)
}

// abort ends the connection at once, without a close frame: it cancels
// the context, which ends an event stream, and closes a WebSocket's
// socket, which ends its reader. It does not block.
func (c *Conn) abort() {
	c.cancel()
	if c.t != nil {
		c.t.abort()
	}
}

// pongReceived is the WebSocket's pong handler.
func (c *Conn) pongReceived(p []byte) {
	if len(p) == 4 && binary.BigEndian.Uint32(p) == c.pingSeq.Load() {
		c.pong.Store(true)
	}
}
