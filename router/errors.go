package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The codes of error answers. Every error answer's JSON body has one, a
// stable word for programs, beside "error", a sentence for people. The
// sentence never holds an internal error (addresses, SQL, package names);
// those go to the log. README.md's "HTTP API answers" lists them.
const (
	CodeBadRequest          = "bad_request"            // 400: the request is malformed
	CodeBadIdempotencyKey   = "bad_idempotency_key"    // 400: the Idempotency-Key header is malformed
	CodeUnauthorized        = "unauthorized"           // 401: missing or wrong API token
	CodeBadToken            = "bad_token"              // 401: missing, invalid or expired client token
	CodeForbidden           = "forbidden"              // 403
	CodeCrossSite           = "cross_site"             // 403: a write from a page on another site
	CodeNotFound            = "not_found"              // 404: no such route
	CodeNoReceivers         = "no_receivers"           // 404: the message reached nobody
	CodeMethodNotAllowed    = "method_not_allowed"     // 405
	CodeConflict            = "conflict"               // 409: the write clashes with stored data
	CodeTooLarge            = "too_large"              // 413: the body is larger than the limit
	CodeJSONRequired        = "json_required"          // 415: a write whose body is not application/json
	CodeHostNotAllowed      = "host_not_allowed"       // 421: the Host is not on AllowedHosts
	CodeRejected            = "rejected"               // 422: the database's rules refuse the write
	CodeIdempotencyKeyReuse = "idempotency_key_reused" // 422: the key was used for another request
	CodeUpgradeRequired     = "upgrade_required"       // 426: a WebSocket route asked without upgrading
	CodeRateLimited         = "rate_limited"           // 429: too many requests or connections
	CodeFull                = "full"                   // 429: the receivers cannot take more now
	CodeInternal            = "internal"               // 500: a fault of the server
	CodeUnavailable         = "unavailable"            // 503: a part the server needs is unreachable
)

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"` // a sentence for people
	Code  string `json:"code"`  // a stable word for programs
}

// CodeFor returns the code of an error answer with status that has no
// more precise one.
func CodeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusUnsupportedMediaType:
		return CodeJSONRequired
	case http.StatusUnprocessableEntity:
		return CodeRejected
	case http.StatusUpgradeRequired:
		return CodeUpgradeRequired
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeBadRequest
}

// WriteError answers with status and a JSON ErrorBody whose code is
// CodeFor(status). msg is shown to the client: never put an internal
// error in it.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteErrorCode(w, status, "", msg)
}

// WriteErrorCode is WriteError with a code of its own; an empty code is
// CodeFor(status).
func WriteErrorCode(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = CodeFor(status)
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	if msg == "" {
		msg = "the request failed"
	}
	WriteJSON(w, status, ErrorBody{Error: msg, Code: code})
}

// PlainError returns err's text for a client, without the package
// prefixes ("channellayer: ", "notifier: ", ...) of Herald's own sentinel
// errors. Use it only for errors that describe the client's own request.
func PlainError(err error) string {
	s := err.Error()
	for _, p := range []string{"channellayer: ", "notifier: ", "consumer: ", "router: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// JSONProblem describes why a request body is not the JSON wanted, in
// words about the body rather than encoding/json's, for the error answer
// of a handler that decodes one.
func JSONProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("it is not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%q must be a %s, not %s", typ.Field, typ.Type.Kind(), typ.Value)
		}
		return "it is not a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "it is empty or cut short"
	}
	if f, ok := unknownField(err); ok {
		return "unknown field " + f
	}
	return "it is not a JSON object"
}

// unknownField returns the quoted name in the error of a
// json.Decoder with DisallowUnknownFields that met a field the target
// lacks. encoding/json gives that error no type (Go issue 29035), so
// its text is read here, and only here; TestUnknownFieldWording fails
// if a Go release words it otherwise.
func unknownField(err error) (string, bool) {
	return strings.CutPrefix(err.Error(), "json: unknown field ")
}
