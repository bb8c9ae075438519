package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// NotificationGroup is the group browsers at /notifications/ join.
const NotificationGroup = "gossip"

// NotificationType is the message type the notification consumer
// forwards to its browser.
const NotificationType = "name.gossip"

// Notification is the consumer behind /notifications/: it accepts every
// connection, joins its group, forwards every "name.gossip" message to the
// browser unchanged, and leaves the group on disconnect.
type Notification struct {
	// Group to join; NotificationGroup if empty.
	Group string
}

// NewNotification returns the Constructor of a Notification consumer for
// group (NotificationGroup if empty). All its connections share one
// stateless JSON consumer.
func NewNotification(group string) Constructor {
	n := &Notification{Group: group}
	if n.Group == "" {
		n.Group = NotificationGroup
	}
	routes := &Routes{}
	routes.HandleFunc(NotificationType, ForwardToClient)
	j := &JSON{Routes: routes, OnConnect: n.connect, OnReceive: n.receive, OnDisconnect: n.disconnect}
	return func(*http.Request) Consumer { return j }
}

func (n *Notification) connect(ctx context.Context, c *Conn) error {
	if !c.MayJoin(n.Group) {
		// A client whose token does not cover the default group can still
		// subscribe to the groups it does cover.
		return nil
	}
	err := c.Join(ctx, n.Group)
	if errors.Is(err, channellayer.ErrUnavailable) {
		// The membership stands and takes effect when the layer returns;
		// the browser stays connected rather than reconnecting in a loop.
		c.Logger().Warn("consumer: joining group while the layer is down", "group", n.Group, "err", err)
		return nil
	}
	return err
}

// Subscription is a client's request to join or leave a group,
// {"type":"subscribe","group":"..."} or {"type":"unsubscribe",...}, and
// the server's answer, {"type":"subscribed","group":"..."} or
// {"type":"unsubscribed",...}. A refused request is answered with an
// error frame that names the group.
type Subscription struct {
	Type  string `json:"type"`
	Group string `json:"group"`
}

// SubscriptionError is the error frame for a refused subscription.
type SubscriptionError struct {
	Type  string `json:"type"` // "error"
	Error string `json:"error"`
	Group string `json:"group"`
}

// WhoAmI is the frame a client sends as {"type":"whoami"} to learn its
// channel name, and the answer it gets back with Channel set. A page can
// hand the name to its backend, which can then send to exactly this
// connection with POST /api/channels/{channel}/send.
type WhoAmI struct {
	Type    string `json:"type"` // "whoami"
	Channel string `json:"channel"`
}

// request is a client frame the notification consumer understands.
type request struct {
	Type  string // "whoami", "subscribe" or "unsubscribe"
	Group string // for subscribe and unsubscribe
}

// decodeRequest reads a request from a decoded client frame.
func decodeRequest(obj map[string]json.RawMessage) (request, error) {
	var r request
	if err := json.Unmarshal(obj["type"], &r.Type); err != nil || r.Type == "" {
		return r, errors.New(`frame needs a string "type"`)
	}
	switch r.Type {
	case "whoami":
	case "subscribe", "unsubscribe":
		if err := json.Unmarshal(obj["group"], &r.Group); err != nil || r.Group == "" {
			return r, fmt.Errorf(`%s needs a string "group"`, r.Type)
		}
	default:
		return r, fmt.Errorf("unknown frame type %q (want whoami, subscribe or unsubscribe)", r.Type)
	}
	return r, nil
}

func (n *Notification) receive(ctx context.Context, c *Conn, obj map[string]json.RawMessage) error {
	r, err := decodeRequest(obj)
	if err != nil {
		return c.SendJSON(ErrorFrame{Type: "error", Error: err.Error()})
	}
	switch r.Type {
	case "whoami":
		return c.SendJSON(WhoAmI{Type: "whoami", Channel: c.Channel()})
	case "subscribe":
		err = c.Join(ctx, r.Group)
	default:
		err = c.Leave(ctx, r.Group)
	}
	switch {
	case err == nil, errors.Is(err, channellayer.ErrUnavailable):
		return c.SendJSON(Subscription{Type: r.Type + "d", Group: r.Group})
	case errors.Is(err, ErrForbiddenGroup), errors.Is(err, ErrTooManyGroups), errors.Is(err, channellayer.ErrInvalidName):
		return c.SendJSON(SubscriptionError{Type: "error", Error: err.Error(), Group: r.Group})
	default:
		return err
	}
}

func (n *Notification) disconnect(c *Conn, _ websocket.StatusCode) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, g := range c.Groups() {
		if err := c.Leave(ctx, g); err != nil {
			c.Logger().Warn("consumer: leaving group", "group", g, "err", err)
		}
	}
}
