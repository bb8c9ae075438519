package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// HandlerFunc handles one layer message of the type it was registered for.
type HandlerFunc func(ctx context.Context, c *Conn, msg channellayer.Message) error

// Routes maps layer message types to handlers, as Django Channels maps a
// message "type" such as "chat.message" to a consumer method
// chat_message. Build one table and share it between connections; it
// must not be changed once connections use it.
type Routes struct {
	m       map[string]HandlerFunc
	forward map[string]bool // types whose handler is ForwardToClient
	types   []string        // patterns of the types forwarded without a handler of their own (Forward)
}

// Forward forwards to the client unchanged (ForwardToClient) every
// message whose type has no handler of its own and matches one of
// patterns: path.Match patterns, and "*" matches every type. A table
// given patterns has chosen what its client sees, so the other types are
// dropped quietly and counted as not forwarded (Stats.Dropped), not
// logged as missing handlers. Forward returns an error for a malformed
// pattern.
func (r *Routes) Forward(patterns ...string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			return fmt.Errorf("consumer: bad message type pattern %q", p)
		}
	}
	r.types = append(r.types, patterns...)
	return nil
}

// matchType reports whether msgType matches one of patterns.
func matchType(patterns []string, msgType string) bool {
	for _, p := range patterns {
		if p == "*" {
			return true // path.Match's * stops at a slash; a type may hold one
		}
		if ok, _ := path.Match(p, msgType); ok {
			return true
		}
	}
	return false
}

// HandleFunc registers h for messages of type msgType, replacing any
// handler registered before.
func (r *Routes) HandleFunc(msgType string, h HandlerFunc) {
	if r.m == nil {
		r.m = make(map[string]HandlerFunc)
		r.forward = make(map[string]bool)
	}
	r.m[msgType] = h
	r.forward[msgType] = h != nil && reflect.ValueOf(h).Pointer() == reflect.ValueOf(ForwardToClient).Pointer()
}

// forwards reports whether messages of type msgType are forwarded to the
// client unchanged, so that the writer can put them straight into its
// batch rather than call the handler, which would queue the frame again.
func (r *Routes) forwards(msgType string) bool {
	if r == nil {
		return false
	}
	if h, ok := r.m[msgType]; ok {
		return h != nil && r.forward[msgType]
	}
	return matchType(r.types, msgType)
}

// Handler returns the handler for msgType, or nil.
func (r *Routes) Handler(msgType string) HandlerFunc {
	if r == nil {
		return nil
	}
	if h, ok := r.m[msgType]; ok || !matchType(r.types, msgType) {
		return h
	}
	return ForwardToClient
}

// filters reports whether the table forwards chosen types (Forward), so
// that a type without a handler is one it does not forward.
func (r *Routes) filters() bool { return r != nil && len(r.types) > 0 }

// ForwardToClient is a HandlerFunc that writes the message to the client
// unchanged, field for field, as Channels' send_json(event) does. The
// encoded bytes are shared with every other recipient.
func ForwardToClient(_ context.Context, c *Conn, msg channellayer.Message) error {
	_ = c.sendID(msg.ID(), msg.Bytes())
	return nil
}

// JSON is a Consumer base for clients that speak JSON objects in text
// frames. Every field is optional. A JSON value can be shared by many
// connections as long as its fields are not changed.
type JSON struct {
	// Routes dispatches layer messages by their "type". A message with no
	// handler is dropped, counted in Stats and logged (one line per type
	// and second for all connections); the connection stays open.
	Routes *Routes
	// OnConnect decides whether to accept, as Consumer.Connect. Nil
	// accepts every connection.
	OnConnect func(ctx context.Context, c *Conn) error
	// OnReceive handles one client frame decoded as a JSON object. Nil
	// ignores client frames. A frame that is not a JSON object is answered
	// with an error frame ({"type":"error","error":...}) and never reaches
	// OnReceive.
	OnReceive func(ctx context.Context, c *Conn, obj map[string]json.RawMessage) error
	// OnDisconnect is called once when the connection is over.
	OnDisconnect func(c *Conn, status websocket.StatusCode)
}

var _ Consumer = (*JSON)(nil)

// Connect implements Consumer.
func (j *JSON) Connect(ctx context.Context, c *Conn) error {
	if j.OnConnect == nil {
		return nil
	}
	return j.OnConnect(ctx, c)
}

// Receive implements Consumer.
func (j *JSON) Receive(ctx context.Context, c *Conn, _ websocket.MessageType, data []byte) error {
	obj, err := decodeObject(data)
	if err != nil {
		return c.SendJSON(ErrorFrame{Type: "error", Code: CodeBadRequest, Error: err.Error()})
	}
	if j.OnReceive == nil {
		return nil
	}
	return j.OnReceive(ctx, c, obj)
}

// decodeObject decodes a client frame that must be one JSON object. The
// decoder bounds nesting depth itself, so deep input fails rather than
// exhausting the stack.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		// encoding/json's reason is in Go's words: the client is told
		// what was wanted.
		return nil, errors.New("frame is not a JSON object")
	}
	if obj == nil {
		return nil, errors.New("frame is not a JSON object")
	}
	return obj, nil
}

// forwarder is a Consumer that can say which layer messages it only
// forwards to the client (ForwardToClient), which the writer then writes
// itself.
type forwarder interface {
	forwards(msgType string) bool
}

func (j *JSON) forwards(msgType string) bool { return j.Routes.forwards(msgType) }

// Dispatch implements Consumer.
func (j *JSON) Dispatch(ctx context.Context, c *Conn, msg channellayer.Message) error {
	h := j.Routes.Handler(msg.Type())
	if h == nil && j.Routes.filters() {
		c.srv.notForwarded.Add(1)
		c.Logger().Debug("consumer: message type not forwarded on this route; dropped", "type", msg.Type())
		return nil
	}
	if h == nil {
		c.srv.unhandled.Add(1)
		c.srv.drops.noHandler(c.srv.logger(), msg.Type())
		return nil
	}
	return h(ctx, c, msg)
}

// Disconnect implements Consumer.
func (j *JSON) Disconnect(c *Conn, status websocket.StatusCode) {
	if j.OnDisconnect != nil {
		j.OnDisconnect(c, status)
	}
}

// ErrorFrame is what a client receives when a frame it sent was refused.
type ErrorFrame struct {
	Type  string `json:"type"` // always "error"
	Code  string `json:"code"` // a stable word for programs, such as "bad_request"
	Error string `json:"error"`
}
