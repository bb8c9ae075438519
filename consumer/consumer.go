package consumer

import (
	"context"
	"fmt"
	"net/http"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
)

// Consumer handles the life of one WebSocket connection. The server calls
// Connect once, then Receive for each client frame and Dispatch for each
// layer message, and Disconnect exactly once at the end, whatever ended
// the connection. Receive runs on the connection's reading goroutine and
// Dispatch on its writing goroutine, so each is called serially, but the
// two may run at the same time.
type Consumer interface {
	// Connect decides whether to accept the connection. A nil error
	// accepts it; a *RejectError refuses the upgrade with an HTTP status;
	// a websocket.CloseError accepts the connection and closes it at once
	// with that code (browsers can read a close code, not an HTTP status);
	// any other error refuses the upgrade with 500.
	Connect(ctx context.Context, c *Conn) error
	// Receive handles one frame from the client. A non-nil error closes
	// the connection: with its code if it is a websocket.CloseError,
	// otherwise with StatusInternalError.
	Receive(ctx context.Context, c *Conn, kind websocket.MessageType, data []byte) error
	// Dispatch handles one message from the channel layer. Errors are
	// treated as in Receive.
	Dispatch(ctx context.Context, c *Conn, msg channellayer.Message) error
	// Disconnect is called once the connection is over. status is the
	// close code, or -1 if the connection ended without one.
	Disconnect(c *Conn, status websocket.StatusCode)
}

// Constructor makes the Consumer for one new connection. The router maps
// URL patterns to constructors, as Django Channels' URLRouter maps them to
// consumer classes.
type Constructor func(r *http.Request) Consumer

// RejectError refuses a connection before the WebSocket upgrade.
type RejectError struct {
	Status int    // HTTP status, 403 if zero
	Reason string // sent as the "error" of the JSON response body: plain words for the client
	Code   string // sent as its "code"; empty: a code for Status, such as "forbidden"
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("consumer: connection rejected (%d): %s", e.status(), e.Reason)
}

func (e *RejectError) status() int {
	if e.Status == 0 {
		return http.StatusForbidden
	}
	return e.Status
}

// Reject returns a *RejectError.
func Reject(status int, reason string) error { return &RejectError{Status: status, Reason: reason} }

// CloseWith returns an error that, returned from Connect, Receive or
// Dispatch, closes the connection with code and reason.
func CloseWith(code websocket.StatusCode, reason string) error {
	return websocket.CloseError{Code: code, Reason: reason}
}
