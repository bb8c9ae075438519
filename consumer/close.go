package consumer

import "github.com/coder/websocket"

// Close codes Herald uses. Each says whether a client should reconnect.
// Standard codes are used where one fits; 4000-4999 are Herald's own.
const (
	// StatusNormal: the server ended the connection on purpose (for
	// example the consumer asked to). Reconnect only if the page still
	// wants notifications.
	StatusNormal = websocket.StatusNormalClosure // 1000
	// StatusUnsupportedData: the client sent a binary frame; Herald speaks
	// JSON text frames only. Do not reconnect without fixing the client.
	StatusUnsupportedData = websocket.StatusUnsupportedData // 1003
	// StatusInvalidPayload: a text frame was not valid UTF-8. Do not
	// reconnect without fixing the client.
	StatusInvalidPayload = websocket.StatusInvalidFramePayloadData // 1007
	// StatusPolicyViolation: the client broke a rule (origin, rate, auth).
	// Reconnecting will not help until the cause is fixed.
	StatusPolicyViolation = websocket.StatusPolicyViolation // 1008
	// StatusTooBig: a frame was larger than the read limit. Do not resend
	// it.
	StatusTooBig = websocket.StatusMessageTooBig // 1009
	// StatusInternalError: the server failed. Reconnect with backoff.
	StatusInternalError = websocket.StatusInternalError // 1011
	// StatusServiceRestart: this instance is shutting down. Reconnect at
	// once, with a little jitter; the load balancer picks another instance.
	StatusServiceRestart = websocket.StatusServiceRestart // 1012
	// StatusTokenExpired: the client's token expired while it was
	// connected. Get a fresh token, then reconnect.
	StatusTokenExpired websocket.StatusCode = 4001
	// StatusPingTimeout is recorded (not sent: the peer is gone) when a
	// client did not answer a ping in time. A client that sees the
	// connection drop should reconnect with backoff.
	StatusPingTimeout websocket.StatusCode = 4002
	// StatusTooSlow: the client did not read fast enough: the bytes queued
	// for it would have passed Server.QueueBytes, so it was cut off rather
	// than let grow. Reconnect with backoff, resuming from the last id it
	// has; messages queued for it were not written.
	StatusTooSlow websocket.StatusCode = 4008
)
