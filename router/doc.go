// Package router is Herald's protocol-type router and HTTP API.
//
// A Router is one http.Handler. Requests that ask for a WebSocket upgrade
// go to the WebSocket route table, which maps URL patterns to consumer
// constructors (as Django Channels' URLRouter does), with path parameters
// handed to the consumer; every other request goes to the HTTP routes.
// A WebSocket request to a path with no WebSocket route gets 404 before
// any upgrade, and a plain request to a WebSocket-only path gets 426
// Upgrade Required.
//
// The router guards every route before it is served (crosssite.go). With
// Router.AllowedHosts set, a request whose Host is not on it gets 421
// ("host_not_allowed"), which keeps out pages that reach the server
// through DNS rebinding. A state-changing HTTP request (any method but
// GET, HEAD and OPTIONS) from a foreign page (its Origin fails the
// WebSocket origin rule, consumer.OriginAllowed with the consumers'
// OriginPatterns, or Sec-Fetch-Site says cross-site without an Origin)
// gets 403 ("cross_site"), and one whose body is not application/json
// gets 415 ("json_required"): the cross-site writes a browser makes
// without a CORS preflight never reach the API.
//
// API adds the HTTP API for backend services: group and channel sends
// through the channel layer, and health checks. Every write answers what
// happened. Errors are JSON ({"error": "...", "code":
// "..."}: a plain sentence, never an internal error, which goes to the
// log, and one of the Code constants) with a status that says what went
// wrong: 400 bad input, 401 bad token, 403 a write from a foreign page,
// 404 nobody to receive, 409 a write that clashes with stored data, 413
// too large, 415 not JSON, 421 a Host not allowed, 422 an Idempotency-Key
// reused for another request or a write the database's rules refuse, 429
// receivers full and 503 layer or database down (both with Retry-After: nothing was applied, or, after a
// timeout, the publisher cannot know; retry with the same key). A message
// that went nowhere is never answered with a 2xx; a group send that
// reached no member but was kept in the group's history did not go
// nowhere, and is answered 202 {"status":"kept"} (a member got it:
// {"status":"sent"}). "sent" means the layer handed the message to a
// member of the group (with Redis, to an instance that has members); a
// member whose route does not forward the message's type drops it, and
// the drop is counted in herald_messages_dropped_total{reason=
// "not_forwarded"}, not answered.
//
// The router knows no application. An application's endpoints (the
// demo's /posts, in cmd/internal/demo) are handlers mounted on HTTP,
// where the guards apply to them as to the API; they answer in the same
// words through the pieces the API is built of: WriteError and
// WriteErrorCode with the Code constants, WriteJSON, ReadBody,
// IdempotencyKey, and RateLimit.Handler, middleware for any route.
//
// The send routes take an Idempotency-Key header, so that a retry is
// applied once (see API.Mount).
package router
