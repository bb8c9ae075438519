package router

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/heraldhq/herald/consumer"
)

// Router is the protocol-type router: WebSocket upgrade requests go to the
// WebSocket route table, everything else to the HTTP routes.
type Router struct {
	// Tokens, when set, must verify a token on every WebSocket request;
	// one without a valid token gets 401 before the upgrade. Set it
	// before serving.
	Tokens *Tokens
	// AllowedHosts, when not nil, lists the Host patterns (see
	// HostAllowed) the router answers for; a request, HTTP or WebSocket,
	// for any other Host gets 421 with code "host_not_allowed", before
	// anything else. It keeps out pages that reach the server through DNS
	// rebinding, and makes the "own host" of the Origin checks one of
	// these. Nil: any Host. Set it before serving.
	AllowedHosts []string

	consumers *consumer.Server
	ws        chi.Router
	http      chi.Router
	log       *slog.Logger
}

// New returns a router whose WebSocket routes are served by consumers,
// with no routes yet. Add WebSocket routes with WebSocket and HTTP routes
// on HTTP (see also API).
func New(consumers *consumer.Server, logger *slog.Logger) *Router {
	if logger == nil {
		logger = slog.Default()
	}
	rt := &Router{consumers: consumers, ws: chi.NewRouter(), http: chi.NewRouter(), log: logger}
	rt.ws.NotFound(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "no WebSocket endpoint at "+r.URL.Path)
	})
	rt.ws.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", http.MethodGet)
		WriteError(w, http.StatusMethodNotAllowed, "a WebSocket upgrade must be a GET request")
	})
	rt.http.NotFound(rt.httpNotFound)
	rt.http.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		allowed := allowedMethods(rt.http, r.URL.Path)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		WriteError(w, http.StatusMethodNotAllowed,
			r.Method+" is not allowed on "+r.URL.Path+"; use "+strings.Join(allowed, " or "))
	})
	return rt
}

// methods are those an Allow header may list.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

// allowedMethods returns the methods routes answers at path, for a 405's
// Allow header (RFC 9110 requires it). chi keeps the list it found
// unexported once a MethodNotAllowed handler of our own is set, so the
// table is asked again through its public Match.
func allowedMethods(routes chi.Routes, path string) []string {
	var allowed []string
	for _, m := range methods {
		if routes.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	return allowed
}

// WebSocket routes upgrade requests whose path matches pattern (chi
// syntax, such as "/rooms/{room}/") to consumers made by newConsumer. Path
// parameters reach the consumer through Conn.Param.
func (rt *Router) WebSocket(pattern string, newConsumer consumer.Constructor) {
	rt.ws.Get(pattern, func(w http.ResponseWriter, r *http.Request) {
		if rt.Tokens != nil {
			if r = rt.Tokens.authenticate(w, r); r == nil {
				return
			}
		}
		var params map[string]string
		if rctx := chi.RouteContext(r.Context()); rctx != nil && len(rctx.URLParams.Keys) > 0 {
			params = make(map[string]string, len(rctx.URLParams.Keys))
			for i, k := range rctx.URLParams.Keys {
				params[k] = rctx.URLParams.Values[i]
			}
		}
		rt.consumers.Serve(w, r, consumer.Route{Pattern: pattern, Params: params, New: newConsumer})
	})
}

// HTTP returns the table of plain HTTP routes, for adding handlers.
func (rt *Router) HTTP() chi.Router { return rt.http }

// ServeHTTP implements http.Handler. A request for an event stream
// (consumer.IsEventStream) at the path of a WebSocket route is served by
// that route's consumer as server-sent events, with the same tokens and
// limits.
//
// Every request's Host is checked against AllowedHosts first. A
// state-changing HTTP request (a method other than GET, HEAD and
// OPTIONS) must then come from no page or an allowed one (403 otherwise,
// code "cross_site") and carry an application/json body (415 otherwise,
// code "json_required"): see checkWrite.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !rt.checkHost(w, r) {
		return
	}
	if IsWebSocketUpgrade(r) ||
		(consumer.IsEventStream(r) && rt.ws.Match(chi.NewRouteContext(), http.MethodGet, r.URL.Path)) {
		rt.ws.ServeHTTP(w, r)
		return
	}
	if !rt.checkWrite(w, r) {
		return
	}
	rt.http.ServeHTTP(w, r)
}

// httpNotFound answers a plain request that no HTTP route matched. If a
// WebSocket route matches, the client forgot to upgrade: say so.
func (rt *Router) httpNotFound(w http.ResponseWriter, r *http.Request) {
	if rt.ws.Match(chi.NewRouteContext(), http.MethodGet, r.URL.Path) {
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		WriteError(w, http.StatusUpgradeRequired, r.URL.Path+" takes WebSocket connections (a GET with "+
			"Connection: Upgrade and Upgrade: websocket) or event streams (a GET with Accept: text/event-stream)")
		return
	}
	WriteError(w, http.StatusNotFound, "nothing at "+r.URL.Path)
}

// IsWebSocketUpgrade reports whether r asks to upgrade to WebSocket.
func IsWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// WriteJSON answers with status and v encoded as JSON, marked so that a
// browser never sniffs it as another type.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
