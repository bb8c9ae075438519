// Package web serves Herald's browser page: one HTML document with its
// stylesheet, scripts and icon, embedded in the binary so that a deploy is a
// single file and the page always matches the server it came with.
//
// The page is plain HTML, CSS and JavaScript: no build step, no framework,
// and nothing loaded from another host. The document's Content-Security-Policy
// ("default-src 'none'" plus 'self' for scripts, styles, images and
// connections) makes that a rule the browser enforces, and also means an
// injected <script> cannot run. The script writes user text with textContent
// only.
//
// # Routes
//
// Handler answers GET and HEAD for exactly these paths:
//
//	/                the page (static/index.html)
//	/static/<file>   every other file under static/
//
// Any other path, including /static/ itself and /static/index.html, is 404;
// other methods on a known path are 405. The handler matches on the full
// r.URL.Path, so mount it at the root of the mux ("/" and "/static/").
//
// # Caching
//
// Every response carries a strong ETag and "Cache-Control: no-cache". Asset
// names carry no content hash, so letting a browser keep app.js without asking
// would run an old script against a new server after a deploy; with no-cache
// it revalidates on each load and gets a bodyless 304 while the binary is
// unchanged.
//
// # What the page expects of the server
//
//   - /notifications/ on the same host, reached through static/herald.js
//     (a WebSocket, or an event stream where WebSockets are blocked),
//     delivering {"type":"name.gossip","event":"New Post","sender":..,"message":..,"id":N}
//     with a "herald_id" (and "herald_group") when the group keeps history,
//     and {"type":"resync","group":..} when a resumed connection cannot be
//     replayed. Other types are ignored.
//   - GET /posts?limit=N answering {"posts":[{"id","author","message","created_at"}]},
//     read at load (50), and again (200, the feed's size) at a reconnection
//     that could not resume and on every resync, so that posts sent while
//     the page was away still appear; a failed read is retried every 10 s.
//     Such a reload replaces the feed (it is emptied first, and what the
//     stream brings meanwhile stays): what it showed may come from a server
//     that restarted and whose post ids started over.
//   - POST /posts taking {"author","message"}, answering 201 with the post,
//     or 4xx/5xx with {"error":"...","code":"..."}, whose "error" the page shows under the form.
//
// Posts are keyed by id: one that arrives both by GET and by the stream is
// shown once, and the feed is ordered by id, newest on top. A name.gossip
// message without a numeric "id" (a backend's group send) is shown too, on
// top when it arrives, once per herald_id, or every time if it has none.
//
// # Reconnecting
//
// static/herald.js is a small client any page can use (README.md documents
// it). After a lost connection it waits a random time between zero and a
// ceiling that starts at 0.5 s and doubles per failed attempt up to 10 s
// (full jitter), then reconnects with ?since= listing the last herald_id it
// saw in each group (one position per group, named by the frames'
// "herald_group"; a frame without one counts for the route's default
// group, sent as a bare id). A connection
// closed for the client's own fault (1003, 1007, 1008, 1009, 4008) waits at
// least as for the third attempt. The backoff resets once a connection has
// stayed open for 5 s, so a server that accepts and drops at once is not
// hammered. While the browser reports being offline it waits for the
// network instead. When WebSockets fail three times without ever opening,
// or do not exist, it uses an event stream (EventSource) instead, which it
// also reopens itself with the same backoff and ?since=. It never passes on
// a message whose herald_id is not after the last one it passed on in the
// same group, and a resync frame naming a group clears only that group's
// position (one naming none clears them all).
//
// # Hooks for browser tests
//
//	#status           data-state is "connecting" (first attempt), "open",
//	                  or "reconnecting" (any later attempt, the wait before
//	                  it, or offline; .is-offline marks the last)
//	#feed             the list of posts, newest first, aria-live="polite"
//	[data-post-id=N]  one post, with children .author and .message (a
//	                  message without a post id is an .post without it)
//	#post-form        the form, with #author, #message and the #send button
//	#form-error       the error text of the last failed send; empty otherwise
//	#retry            "Retry now" button, shown while waiting to reconnect
//
// The handler is safe for concurrent use; its content is fixed at build time.
package web
