package consumer

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// Codes of the consumer's refusals before an upgrade and of its error
// frames. They are a part of the codes every error answer of Herald
// carries (router's Code constants; README's "HTTP API answers").
const (
	CodeBadRequest      = "bad_request"      // a malformed frame or handshake, a bad name
	CodeForbidden       = "forbidden"        // a group the client may not join, a foreign origin
	CodeTooManyGroups   = "too_many_groups"  // MaxGroups reached
	CodeGroupLimit      = "group_limit"      // the instance holds as many groups as it may
	CodeNotMember       = "not_member"       // resume of a group the client is not in
	CodeRateLimited     = "rate_limited"     // too many connections from the address
	CodeUnavailable     = "unavailable"      // shutting down, full, or the channel layer is down
	CodeInternal        = "internal"         // a fault of the server
	CodeUpgradeRequired = "upgrade_required" // an unsupported WebSocket version
)

// codeFor is the code of a refusal with status that has no better one.
func codeFor(status int) string {
	switch status {
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusUpgradeRequired:
		return CodeUpgradeRequired
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeBadRequest
}

// refusal is the JSON body of a refused connection, the same shape as
// the router's ErrorBody.
type refusal struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// refuse answers a request that is not upgraded with status and a JSON
// body {"error": msg, "code": code}; an empty code is codeFor(status).
func refuse(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = codeFor(status)
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(refusal{Error: msg, Code: code})
}

// plainError returns err's text for the client, without the package
// prefixes of Herald's sentinel errors. Only for errors about the
// client's own request.
func plainError(err error) string {
	s := err.Error()
	for _, p := range []string{"consumer: ", "channellayer: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// frameCode is the code of an error frame refusing a subscription.
func frameCode(err error) string {
	switch {
	case errors.Is(err, ErrForbiddenGroup):
		return CodeForbidden
	case errors.Is(err, ErrTooManyGroups):
		return CodeTooManyGroups
	case errors.Is(err, groups.ErrGroupLimit):
		return CodeGroupLimit
	case errors.Is(err, channellayer.ErrInvalidName):
		return CodeBadRequest
	}
	return CodeInternal
}

// acceptRefusal holds the answer websocket.Accept writes when it refuses
// a handshake, so that the client is sent the JSON refusal instead of
// the library's text.
type acceptRefusal struct {
	status int
	body   bytes.Buffer
}

// handshakeRefusal returns the sentence for a handshake refused with
// status by websocket.Accept.
func handshakeRefusal(status int) string {
	switch status {
	case http.StatusForbidden:
		return "origin not allowed"
	case http.StatusUpgradeRequired:
		return "unsupported WebSocket version; use version 13"
	case http.StatusMethodNotAllowed:
		return "a WebSocket upgrade must be a GET request"
	}
	return "not a valid WebSocket handshake"
}
