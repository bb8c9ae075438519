package router

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/notifier"
)

// API serves the HTTP API for backend services and the web page. Layer is
// required; every other field is optional.
type API struct {
	// Layer delivers what the API sends.
	Layer channellayer.Layer
	// Posts stores posts for POST and GET /posts. Nil: no /posts routes.
	Posts notifier.Store
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
	// /api/ and POST /posts (see RateLimit); its Token should be Token.
	// Nil: no limit.
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
//	POST /posts                       create a post
//	GET  /posts                       recent posts, newest first
//	GET  /healthz                     the process is alive
//	GET  /readyz                      the layer and database are reachable
//
// The POST routes take an Idempotency-Key header (1 to 255 printable
// ASCII bytes): a retried request with the same key is applied once and
// answered as the first was, with the header Idempotent-Replayed: true;
// the same key with another body is answered 422,
// idempotency_key_reused. Answers that invite a retry (503, 429) are not
// replayed: the retry is tried again. Posts keep their keys in the store
// (herald_idempotency with Postgres, so every instance finds them); a
// send's key goes with the message to the layer (Message.WithKey, as
// "group:<group>:<key>" or "channel:<channel>:<key>"), and the API also
// remembers the last 10,000 keyed send answers of its instance for 24
// hours. Limit, when set, applies to /api/ and POST /posts, before the
// API token is checked. Mount must be called once per API.
func (a *API) Mount(r chi.Router) {
	a.memo = newMemo()
	r.Route("/api", func(r chi.Router) {
		r.Use(a.Limit.Handler, a.authorize)
		r.Post("/groups/{group}/send", a.groupSend)
		r.Post("/channels/{channel}/send", a.channelSend)
	})
	if a.Posts != nil {
		r.With(a.Limit.Handler).Post("/posts", a.createPost)
		r.Get("/posts", a.recentPosts)
	}
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
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

// readBody reads the request body within the size limit, answering 413,
// 408 (the body did not arrive within the server's read timeout) or 400
// itself when it fails.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := a.MaxBody
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
		a.logger().Debug("router: reading a request body failed", "err", err)
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
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	body, ok := a.readBody(w, r)
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
		WriteError(w, http.StatusBadRequest, plain(err))
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
	writeJSON(w, http.StatusAccepted, map[string]string{"status": status})
}

// layerError answers for a failed layer send. Never a 2xx: a message that
// went nowhere is an error the caller must see (a group send kept in a
// history did not go nowhere; groupSend answers it).
func (a *API) layerError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, channellayer.ErrInvalidName), errors.Is(err, channellayer.ErrInvalidMessage):
		WriteError(w, http.StatusBadRequest, plain(err))
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

type postRequest struct {
	Author  *string `json:"author"`
	Message *string `json:"message"`
}

// createPost answers 201 with the post and its "delivery" for every
// stored post, delivered yet ("sent") or not ("pending": the log or the
// store's outbox delivers it). Anything else means nothing was stored.
func (a *API) createPost(w http.ResponseWriter, r *http.Request) {
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var req postRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		WriteError(w, http.StatusBadRequest, "body must be a JSON object {\"author\": ..., \"message\": ...}: "+jsonProblem(err))
		return
	}
	if dec.More() {
		WriteError(w, http.StatusBadRequest, "body must hold exactly one JSON object")
		return
	}
	if req.Author == nil || req.Message == nil {
		WriteError(w, http.StatusBadRequest, `"author" and "message" are both required`)
		return
	}
	var refused *notifier.RefusedError
	created, err := a.Posts.Create(r.Context(), notifier.NewPost{Author: *req.Author, Message: *req.Message, IdempotencyKey: key})
	switch {
	case err == nil:
		if created.Replayed {
			w.Header().Set(replayedHeader, "true")
		}
		writeJSON(w, http.StatusCreated, created)
	case errors.As(err, &refused):
		// The database's own rules refused the post: the client's to fix,
		// so no retry, and its SQL error, which names the constraint,
		// stays in the log.
		a.logger().Info("router: the database refused a post", "err", err)
		switch {
		case errors.Is(err, notifier.ErrPostConflict):
			WriteErrorCode(w, http.StatusConflict, CodeConflict, refused.Reason)
		case errors.Is(err, notifier.ErrInvalidPost):
			WriteErrorCode(w, http.StatusBadRequest, CodeBadRequest, refused.Reason)
		default:
			WriteErrorCode(w, http.StatusUnprocessableEntity, CodeRejected, refused.Reason)
		}
	case errors.Is(err, notifier.ErrInvalidPost):
		WriteError(w, http.StatusBadRequest, plain(err))
	case errors.Is(err, notifier.ErrIdempotencyKeyReused):
		WriteErrorCode(w, http.StatusUnprocessableEntity, CodeIdempotencyKeyReuse,
			"this Idempotency-Key was used for another post; use a new key for a new post")
	case errors.Is(err, notifier.ErrBacklogFull):
		a.logger().Warn("router: creating post failed", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteErrorCode(w, http.StatusServiceUnavailable, CodeUnavailable,
			"the post was not stored: too many posts wait for the channel layer; retry after Retry-After")
	default:
		a.logger().Warn("router: creating post failed", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteErrorCode(w, http.StatusServiceUnavailable, CodeUnavailable,
			"the post was not stored: the database is unreachable; retry after Retry-After")
	}
}

func (a *API) recentPosts(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			WriteError(w, http.StatusBadRequest, "limit must be a whole number from 1 to 500")
			return
		}
		limit = n
	}
	posts, err := a.Posts.Recent(r.Context(), limit)
	if err != nil {
		a.logger().Warn("router: listing posts failed", "err", err)
		w.Header().Set("Retry-After", "1")
		WriteErrorCode(w, http.StatusServiceUnavailable, CodeUnavailable,
			"could not list posts: the database is unreachable; retry after Retry-After")
		return
	}
	if posts == nil {
		posts = []notifier.Post{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"posts": posts})
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
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "code": CodeUnavailable, "error": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
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
