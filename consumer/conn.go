package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

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
	channel  string
	req      *http.Request
	params   map[string]string
	layer    channellayer.Layer
	log      *slog.Logger
	srv      *Server
	stats    *routeStats
	identity *Identity   // nil: anonymous
	active   atomic.Bool // the client sent something since the last ping tick
	groups   []string    // joined through Join, guarded by mu

	t      transport // the WebSocket or the event stream
	ws     *websocket.Conn
	ctx    context.Context // ends when the connection is over
	cancel context.CancelFunc

	// The outbound queue: layer messages to dispatch and frames to write,
	// in arrival order, bounded by srv.queueSize(). The writer swaps it out
	// whole, so producers never wait on a write.
	mu        sync.Mutex
	queue     []item
	wake      chan struct{} // capacity 1: something queued, or closing
	closing   bool
	closeCode websocket.StatusCode
	closeWhy  string
	byUs      bool // we started the close

	// Resuming: live messages of a group being resumed wait in held until
	// the replay is queued; replayed counts queued items that the queue
	// bound does not count; flowed holds, per group, the first history id
	// the writer took; floor holds, per resumed group, the last id the
	// client has (the resume point or the last replayed id), below which a
	// late live copy is a duplicate.
	held     map[string][]item
	replayed int
	flowed   map[string]string
	floor    map[string]channellayer.ID
}

type item struct {
	msgType string // non-empty for a layer message to dispatch
	group   string // the group a layer message was sent to, if known
	id      string // its history id, or the id of a frame to write
	data    []byte
}

// ID returns the connection's id, unique within this process, which every
// log line about the connection carries.
func (c *Conn) ID() uint64 { return c.id }

// Channel returns the connection's channel name on the layer. A backend
// can send to exactly this connection with Layer.Send.
func (c *Conn) Channel() string { return c.channel }

// Layer returns the channel layer the connection lives on.
func (c *Conn) Layer() channellayer.Layer { return c.layer }

// Request returns the HTTP request that opened the connection.
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
	public := c.srv.PublicGroups
	if public == nil {
		public = []string{"gossip"}
	}
	if matchAny(public, group) {
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
func (c *Conn) Logger() *slog.Logger { return c.log }

// Context returns a context that ends when the connection is over.
func (c *Conn) Context() context.Context { return c.ctx }

// Deliver implements groups.Member. It never blocks: when the outbound
// queue is full the client is too slow, and it is closed with
// StatusTooSlow.
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
	return c.push(item{id: id, data: data})
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
		c.srv.droppedSlow.Add(int64(len(c.queue)))
	}
	c.queue = nil
	c.held = nil
	c.signal()
}

func (c *Conn) push(it item) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		c.srv.droppedGone.Add(1)
		return false
	}
	queued := len(c.queue) - c.replayed
	for _, h := range c.held {
		queued += len(h)
	}
	if queued >= c.srv.queueSize() {
		c.srv.slow.Add(1)
		c.srv.droppedSlow.Add(1) // this one; closeLocked counts the queue
		c.log.Warn("consumer: client too slow, closing", "queued", queued)
		c.closeLocked(StatusTooSlow, "too slow: outbound queue full")
		return false
	}
	if it.id != "" && c.floor != nil {
		if f, ok := c.floor[it.group]; ok {
			if id, err := channellayer.ParseID(it.id); err == nil && id.Compare(f) <= 0 {
				// Published before the resume point or replayed already, and
				// delivered late: the layer hands a new member messages
				// published before it joined that were still on their way.
				return true
			}
		}
	}
	if it.group != "" && it.msgType != "" {
		if h, ok := c.held[it.group]; ok {
			c.held[it.group] = append(h, it)
			return true
		}
	}
	c.queue = append(c.queue, it)
	if len(c.queue) == 1 {
		c.signal()
	}
	return true
}

func (c *Conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take returns everything queued, or closing = true once Close was called.
func (c *Conn) take(spare []item) (batch []item, closing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return nil, true
	}
	batch = c.queue
	c.replayed = 0
	for _, it := range batch {
		if it.id != "" && it.group != "" {
			if c.flowed == nil {
				c.flowed = make(map[string]string)
			}
			if _, ok := c.flowed[it.group]; !ok {
				c.flowed[it.group] = it.id
			}
		}
	}
	// Hand back the previous batch's storage if it is small, so a steady
	// trickle does not allocate, and drop it if a burst made it large.
	if cap(spare) <= 64 {
		clear(spare)
		c.queue = spare[:0]
	} else {
		c.queue = nil
	}
	return batch, false
}
