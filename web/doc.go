// Package web serves Herald's browser page: one HTML document with its
// stylesheet, script and icon, embedded in the binary so that a deploy is a
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
//   - A WebSocket at /notifications/ on the same host, sending text frames
//     {"type":"name.gossip","event":"New Post","sender":..,"message":..,"id":N}.
//     Frames of other types are ignored.
//   - GET /posts?limit=50 answering {"posts":[{"id","author","message","created_at"}]},
//     read at load and after every reconnect so posts sent while the socket
//     was down still appear; a failed read is retried every 10 s.
//   - POST /posts taking {"author","message"}, answering 201 with the post,
//     or 4xx/5xx with {"error":"..."}, which the page shows under the form.
//
// Posts are keyed by id: one that arrives both by GET and by WebSocket is
// shown once, and the feed is ordered by id, newest on top.
//
// # Reconnecting
//
// After a close the page waits, then reconnects:
//
//   - 1012 (service restart): 0.1–1 s, random, so the pages of a restarted
//     instance do not return in one burst.
//   - 4008 (client too slow): exponential backoff starting at 1–2 s.
//   - anything else: exponential backoff from 0.25–0.5 s, doubling, with
//     jitter over the upper half of each step, capped at 10 s.
//
// The backoff resets once a connection has stayed open for 5 s, so a server
// that accepts and drops at once is not hammered. While the browser reports
// being offline the page waits for it to come back instead.
//
// # Hooks for browser tests
//
//	#status           data-state is "connecting" (first attempt), "open",
//	                  or "reconnecting" (any later attempt, the wait before
//	                  it, or offline; .is-offline marks the last)
//	#feed             the list of posts, newest first, aria-live="polite"
//	[data-post-id=N]  one post, with children .author and .message
//	#post-form        the form, with #author, #message and the #send button
//	#form-error       the error text of the last failed send; empty otherwise
//	#retry            "Retry now" button, shown while waiting to reconnect
//
// The handler is safe for concurrent use; its content is fixed at build time.
package web
