package demo

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/heraldhq/herald/notifier"
	"github.com/heraldhq/herald/router"
)

// PostsPath is where the demo's posts are made and listed.
const PostsPath = "/posts"

// Posts is the HTTP API of the demo's posts: Create for POST PostsPath,
// Recent for GET. It lives with the demo, not in router, because the
// posts table is the demo's; and not in notifier, which turns rows into
// group sends and speaks no HTTP. Errors are router's JSON answers
// (router.WriteErrorCode), and the Idempotency-Key is read as router
// reads it for its sends (router.IdempotencyKey), but kept by the store
// (herald_idempotency with Postgres, so every instance finds it).
//
// Mount the handlers on a router's HTTP routes (Router.HTTP), so that
// the router's guards (allowed Hosts, cross-site writes, JSON bodies)
// apply to them as to every route.
type Posts struct {
	// Store keeps the posts; required.
	Store notifier.Store
	// MaxBody is the largest request body in bytes. Default 64 KiB.
	MaxBody int64
	// Logger receives server-side failures ("demo: ..."). Default
	// slog.Default().
	Logger *slog.Logger
}

// Mount adds POST and GET PostsPath to r, with limit, when not nil (a
// router.RateLimit's Handler), in front of POST: reads are not limited.
func (p *Posts) Mount(r chi.Router, limit func(http.Handler) http.Handler) {
	create := http.Handler(http.HandlerFunc(p.Create))
	if limit != nil {
		create = limit(create)
	}
	r.Method(http.MethodPost, PostsPath, create)
	r.Get(PostsPath, p.Recent)
}

func (p *Posts) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

type postRequest struct {
	Author  *string `json:"author"`
	Message *string `json:"message"`
}

// Create answers 201 with the post and its "delivery" for every stored
// post, delivered yet ("sent") or not ("pending": the log or the store's
// outbox delivers it). Anything else means nothing was stored.
func (p *Posts) Create(w http.ResponseWriter, r *http.Request) {
	key, ok := router.IdempotencyKey(w, r)
	if !ok {
		return
	}
	body, ok := router.ReadBody(w, r, p.MaxBody, p.Logger)
	if !ok {
		return
	}
	var req postRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		router.WriteError(w, http.StatusBadRequest, "body must be a JSON object {\"author\": ..., \"message\": ...}: "+router.JSONProblem(err))
		return
	}
	if dec.More() {
		router.WriteError(w, http.StatusBadRequest, "body must hold exactly one JSON object")
		return
	}
	if req.Author == nil || req.Message == nil {
		router.WriteError(w, http.StatusBadRequest, `"author" and "message" are both required`)
		return
	}
	var refused *notifier.RefusedError
	created, err := p.Store.Create(r.Context(), notifier.NewPost{Author: *req.Author, Message: *req.Message, IdempotencyKey: key})
	switch {
	case err == nil:
		if created.Replayed {
			w.Header().Set(router.ReplayedHeader, "true")
		}
		router.WriteJSON(w, http.StatusCreated, created)
	case errors.As(err, &refused):
		// The database's own rules refused the post: the client's to fix,
		// so no retry, and its SQL error, which names the constraint,
		// stays in the log.
		p.logger().Info("demo: the database refused a post", "err", err)
		switch {
		case errors.Is(err, notifier.ErrPostConflict):
			router.WriteErrorCode(w, http.StatusConflict, router.CodeConflict, refused.Reason)
		case errors.Is(err, notifier.ErrInvalidPost):
			router.WriteErrorCode(w, http.StatusBadRequest, router.CodeBadRequest, refused.Reason)
		default:
			router.WriteErrorCode(w, http.StatusUnprocessableEntity, router.CodeRejected, refused.Reason)
		}
	case errors.Is(err, notifier.ErrInvalidPost):
		router.WriteError(w, http.StatusBadRequest, router.PlainError(err))
	case errors.Is(err, notifier.ErrIdempotencyKeyReused):
		router.WriteErrorCode(w, http.StatusUnprocessableEntity, router.CodeIdempotencyKeyReuse,
			"this Idempotency-Key was used for another post; use a new key for a new post")
	case errors.Is(err, notifier.ErrBacklogFull):
		p.logger().Warn("demo: creating post failed", "err", err)
		w.Header().Set("Retry-After", "1")
		router.WriteErrorCode(w, http.StatusServiceUnavailable, router.CodeUnavailable,
			"the post was not stored: too many posts wait for the channel layer; retry after Retry-After")
	default:
		p.logger().Warn("demo: creating post failed", "err", err)
		w.Header().Set("Retry-After", "1")
		router.WriteErrorCode(w, http.StatusServiceUnavailable, router.CodeUnavailable,
			"the post was not stored: the database is unreachable; retry after Retry-After")
	}
}

// Recent answers 200 with the latest posts, newest first: 50, or the
// query's limit (1 to 500).
func (p *Posts) Recent(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 500 {
			router.WriteError(w, http.StatusBadRequest, "limit must be a whole number from 1 to 500")
			return
		}
		limit = n
	}
	posts, err := p.Store.Recent(r.Context(), limit)
	if err != nil {
		p.logger().Warn("demo: listing posts failed", "err", err)
		w.Header().Set("Retry-After", "1")
		router.WriteErrorCode(w, http.StatusServiceUnavailable, router.CodeUnavailable,
			"could not list posts: the database is unreachable; retry after Retry-After")
		return
	}
	if posts == nil {
		posts = []notifier.Post{}
	}
	router.WriteJSON(w, http.StatusOK, map[string]any{"posts": posts})
}
