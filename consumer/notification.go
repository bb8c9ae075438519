package consumer

import (
	"context"
	"errors"
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
	j := &JSON{Routes: routes, OnConnect: n.connect, OnDisconnect: n.disconnect}
	return func(*http.Request) Consumer { return j }
}

func (n *Notification) connect(ctx context.Context, c *Conn) error {
	err := c.Layer().GroupAdd(ctx, n.Group, c.Channel())
	if errors.Is(err, channellayer.ErrUnavailable) {
		// The membership stands and takes effect when the layer returns;
		// the browser stays connected rather than reconnecting in a loop.
		c.Logger().Warn("consumer: joining group while the layer is down", "group", n.Group, "err", err)
		return nil
	}
	return err
}

func (n *Notification) disconnect(c *Conn, _ websocket.StatusCode) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Layer().GroupDiscard(ctx, n.Group, c.Channel()); err != nil {
		c.Logger().Warn("consumer: leaving group", "group", n.Group, "err", err)
	}
}
