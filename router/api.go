package router

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/heraldhq/herald/channellayer"
)

// API serves the HTTP API for backend services and the web page. Layer is
// required; every other field is optional.
type API struct {
	// Layer delivers what the API sends.
	Layer channellayer.Layer
	// Token, when set, must be presented as "Authorization: Bearer <Token>"
	// on every /api/ request.
	Token string
	// MaxBody is the largest request body in bytes. Default 64 KiB.
	MaxBody int64
	// Ready reports whether the instance can serve (layer and database
	// reachable), for /readyz. Nil: always ready.
	Ready func(ctx context.Context) error
	// Logger receives server-side failures. Default slog.Default().
	Logger *slog.Logger
	// Limit, when set, limits the requests of each client address to
	// /api/ (see RateLimit); its Token should be Token. Put its Handler
	// on other write routes to share its buckets. Nil: no limit.
	Limit *RateLimit

	memo *memo // answers to keyed sends, made by Mount

	readyMu     sync.Mutex
	readyLast   string    // the last readiness failure logged, "" while ready
	readyLogged time.Time // when it was
}

// Mount adds the API's routes to r:
//
//	POST /api/groups/{group}/send     send a message to a group (or keep it in its history)
//	POST /api/channels/{channel}/send send a message to one channel
//	GET  /healthz                     the process is alive
//	GET  /readyz                      the layer and database are reachable
//
// The send routes take an Idempotency-Key header (1 to 255 printable
// ASCII bytes, see IdempotencyKey): a retried request with the same key
// is applied once and answered as the first was, with the header
// Idempotent-Replayed: true; the same key with another body is answered
// 422, idempotency_key_reused. Answers that invite a retry (503, 429) are
// not replayed: the retry is tried again. A send's key goes with the
// message to the layer (Message.WithKey, as "group:<group>:<key>" or
// "channel:<channel>:<key>"), and the API also remembers the last 10,000
// keyed send answers of its instance for 24 hours. Limit, when set,
// applies to /api/, before the API token is checked. Mount must be
// called once per API.
func (a *API) Mount(r chi.Router) {
	a.memo = newMemo()
	r.Route("/api", func(r chi.Router) {
		r.Use(a.Limit.Handler, a.authorize)
		r.Post("/groups/{group}/send", a.groupSend)
		r.Post("/channels/{channel}/send", a.channelSend)
	})
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", a.readyz)
}

func (a *API) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

func (a *API) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		RequireToken(a.Token, next).ServeHTTP(w, r)
	})
}

// RequireToken returns next behind token: a request must present it as
// "Authorization: Bearer <token>" (compared in constant time), or gets
// 401. An empty token lets every request through.
func RequireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong API token (Authorization: Bearer <token>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ReadBody reads r's body, up to limit bytes (64 KiB if limit is 0 or
// less), answering 413, 408 (the body did not arrive within the server's
// read timeout) or 400 itself when it fails; log (nil: slog.Default())
// gets why a read failed. ok is false when it answered.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, log *slog.Logger) (body []byte, ok bool) {
	if limit <= 0 {
		limit = 64 << 10
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", limit))
			return nil, false
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The server's read timeout (HERALD_READ_TIMEOUT) passed
			// before the body was in; the connection is closed after this.
			// The write timeout, which ran meanwhile, may be as short:
			// the answer gets a moment of its own.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Second))
			w.Header().Set("Connection", "close")
			WriteError(w, http.StatusRequestTimeout, "request body not received in time")
			return nil, false
		}
		if log == nil {
			log = slog.Default()
		}
		log.Debug("router: reading a request body failed", "err", err)
		WriteError(w, http.StatusBadRequest, "could not read the request body")
		return nil, false
	}
	return body, true
}

// The status of a send's 202 answer.
const (
	statusSent = "sent" // a receiver got the message
	statusKept = "kept" // nobody did, but the group's history keeps it
)

// groupSend answers 202 "sent" when the message reached a member, and 202
// "kept" when the group has no member anywhere but keeps a history: the
// message was stored and a client that resumes receives it, so for the
// publisher it is accepted, not lost. A group without history that
// reached nobody is a 404.
func (a *API) groupSend(w http.ResponseWriter, r *http.Request) {
	group := chi.URLParam(r, "group")
	a.send(w, r, "group:"+group, func(ctx context.Context, msg channellayer.Message) (string, error) {
		res, err := a.Layer.GroupSend(ctx, group, msg)
		if err == nil && !res.Delivered && res.Kept() {
			return statusKept, nil
		}
		return statusSent, err
	})
}

func (a *API) channelSend(w http.ResponseWriter, r *http.Request) {
	channel := chi.URLParam(r, "channel")
	a.send(w, r, "channel:"+channel, func(ctx context.Context, msg channellayer.Message) (string, error) {
		return statusSent, a.Layer.Send(ctx, channel, msg)
	})
}

// send parses the request's message and hands it to send, which returns
// the status of the 202 answer. scope names the target, so that one
// Idempotency-Key used for two targets makes two requests.
func (a *API) send(w http.ResponseWriter, r *http.Request, scope string, send func(context.Context, channellayer.Message) (string, error)) {
	key, ok := IdempotencyKey(w, r)
	if !ok {
		return
	}
	body, ok := ReadBody(w, r, a.MaxBody, a.Logger)
	if !ok {
		return
	}
	if key == "" {
		a.sendBody(w, r.Context(), body, "", send)
		return
	}
	key = scope + ":" + key
	a.memo.do(w, r, key, body, func(w http.ResponseWriter) {
		a.sendBody(w, r.Context(), body, key, send)
	})
}

// sendBody answers a send of body, keyed with key unless it is empty.
func (a *API) sendBody(w http.ResponseWriter, ctx context.Context, body []byte, key string,
	send func(context.Context, channellayer.Message) (string, error)) {
	msg, err := channellayer.ParseMessage(body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, PlainError(err))
		return
	}
	if key != "" {
		msg = msg.WithKey(layerKey(key))
	}
	status, err := send(ctx, msg)
	if err != nil {
		a.layerError(w, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, map[string]string{"status": status})
}

// layerError answers for a failed layer send. Never a 2xx: a message that
// went nowhere is an error the caller must see (a group send kept in a
// history did not go nowhere; groupSend answers it).
func (a *API) layerError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, channellayer.ErrInvalidName), errors.Is(err, channellayer.ErrInvalidMessage):
		WriteError(w, http.StatusBadRequest, PlainError(err))
	case errors.Is(err, channellayer.ErrNoReceivers):
		WriteErrorCode(w, http.StatusNotFound, CodeNoReceivers,
			"nobody received the message: the group has no member, or the channel no connection")
	case errors.Is(err, channellayer.ErrFull):
		w.Header().Set("Retry-After", "1")
		WriteErrorCode(w, http.StatusTooManyRequests, CodeFull,
			"the receivers cannot take more messages now; retry after Retry-After")
	default:
		a.logger().Warn("router: layer send failed", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteErrorCode(w, http.StatusServiceUnavailable, CodeUnavailable,
			"the channel layer is unreachable and the message was not sent; retry after Retry-After")
	}
}

// NotReady is an error a Ready func returns to name, for the client,
// the part of the instance that is down. The client sees Reason; Err,
// the underlying error, goes to the log.
type NotReady struct {
	Reason string // plain words, such as "channel layer unreachable"
	Err    error
}

func (e *NotReady) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *NotReady) Unwrap() error { return e.Err }

// readyLogEvery is how often an unchanged readiness failure is logged
// again: load balancers poll /readyz often.
const readyLogEvery = time.Minute

// readyz answers 200 when Ready passes, and 503 otherwise with the part
// that is down in plain words (NotReady.Reason), never the underlying
// error, which is logged when it changes and at most once a
// readyLogEvery while it stays.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	var err error
	if a.Ready != nil {
		err = a.Ready(r.Context())
	}
	a.logReadiness(err)
	if err != nil {
		reason := "not ready"
		var nr *NotReady
		if errors.As(err, &nr) && nr.Reason != "" {
			reason = nr.Reason
		}
		w.Header().Set("Retry-After", "1")
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "code": CodeUnavailable, "error": reason})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// logReadiness logs a readiness failure when it differs from the last
// one or the last was logged readyLogEvery ago, and the return to ready.
func (a *API) logReadiness(err error) {
	a.readyMu.Lock()
	defer a.readyMu.Unlock()
	if err == nil {
		if a.readyLast != "" {
			a.readyLast = ""
			a.logger().Info("router: ready again")
		}
		return
	}
	text := err.Error()
	if text == a.readyLast && time.Since(a.readyLogged) < readyLogEvery {
		return
	}
	a.readyLast, a.readyLogged = text, time.Now()
	a.logger().Warn("router: not ready", "err", err)
}
