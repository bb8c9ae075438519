package web

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// get serves one request through Handler and returns the recorded answer.
func get(t *testing.T, method, target string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, req)
	return rec
}

// openTag returns the start tag of the element with the given id.
func openTag(t *testing.T, page, id string) string {
	t.Helper()
	re := regexp.MustCompile(`<[a-z]+\b[^>]*\bid="` + regexp.QuoteMeta(id) + `"[^>]*>`)
	tags := re.FindAllString(page, -1)
	if len(tags) != 1 {
		t.Fatalf("want one element with id=%q, found %d", id, len(tags))
	}
	return tags[0]
}

func TestIndex(t *testing.T) {
	rec := get(t, http.MethodGet, "/", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /: status %d", rec.Code)
	}
	h := rec.Header()
	if got, want := h.Get("Content-Type"), "text/html; charset=utf-8"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	if got := h.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("Cache-Control = %q, want no-cache", got)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q, want a default-src 'none' policy", csp)
	}
	page := rec.Body.String()
	if !strings.Contains(page, "<title>Herald</title>") {
		t.Error("page has no <title>Herald</title>")
	}

	// The hooks browser tests rely on, each with the tag and attributes they expect.
	hooks := []struct {
		id   string
		want []string
	}{
		{"feed", []string{`aria-live="polite"`}},
		{"status", []string{`data-state="connecting"`}},
		{"post-form", []string{"<form"}},
		{"author", []string{"<input"}},
		{"message", []string{"<textarea"}},
		{"send", []string{"<button", `type="submit"`}},
		{"form-error", nil},
	}
	for _, hk := range hooks {
		tag := openTag(t, page, hk.id)
		for _, w := range hk.want {
			if !strings.Contains(tag, w) {
				t.Errorf("element #%s: %s lacks %s", hk.id, tag, w)
			}
		}
	}
	for _, id := range []string{"author", "message"} {
		if !strings.Contains(page, `<label for="`+id+`"`) {
			t.Errorf("#%s has no <label>", id)
		}
	}
}

// TestScriptHooks checks that the script builds posts the way browser tests
// find them: data-post-id on each post, .author and .message inside; and that
// it connects through herald.js, which knows the endpoint.
func TestScriptHooks(t *testing.T) {
	js := get(t, http.MethodGet, "/static/app.js", nil).Body.String()
	for _, want := range []string{
		"dataset.postId", "'author'", "'message'", "dataset.state",
		"new Herald(", "'resync'", "'/posts?limit='", "'name.gossip'", "localStorage",
	} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js does not contain %s", want)
		}
	}
	if strings.Contains(js, "new WebSocket") || strings.Contains(js, "new EventSource") {
		t.Error("app.js opens its own connection; it must use herald.js")
	}
	client := get(t, http.MethodGet, "/static/herald.js", nil).Body.String()
	if !strings.Contains(client, "'/notifications/'") {
		t.Error("herald.js does not default to '/notifications/'")
	}
	for name, src := range map[string]string{"app.js": js, "herald.js": client} {
		if strings.Contains(src, "innerHTML") || strings.Contains(src, "insertAdjacentHTML") {
			t.Errorf("%s uses innerHTML; user text must go through textContent", name)
		}
	}
}

// TestPageLoadsClient checks that the page loads herald.js, and before
// app.js, which uses it: deferred scripts run in document order.
func TestPageLoadsClient(t *testing.T) {
	page := get(t, http.MethodGet, "/", nil).Body.String()
	client := strings.Index(page, `<script src="static/herald.js" defer></script>`)
	app := strings.Index(page, `<script src="static/app.js" defer></script>`)
	switch {
	case client < 0:
		t.Fatal(`page has no <script src="static/herald.js" defer>`)
	case app < 0:
		t.Fatal(`page has no <script src="static/app.js" defer>`)
	case client > app:
		t.Error("page loads app.js before herald.js")
	}
}

// TestLinkedAssets fetches every asset the page links to, so a renamed file
// cannot leave the page broken.
func TestLinkedAssets(t *testing.T) {
	page := get(t, http.MethodGet, "/", nil).Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) == 0 {
		t.Fatal("page links to no assets")
	}
	for _, m := range refs {
		ref := m[1]
		if !strings.HasPrefix(ref, "static/") {
			t.Errorf("page links to %q: want a relative static/ path, nothing from elsewhere", ref)
			continue
		}
		if rec := get(t, http.MethodGet, "/"+ref, nil); rec.Code != http.StatusOK {
			t.Errorf("GET /%s: status %d", ref, rec.Code)
		}
	}
}

// TestNoExternalResources guards the promise that the page loads nothing from
// another host: no absolute URL appears in any file but the SVG namespace.
func TestNoExternalResources(t *testing.T) {
	absolute := regexp.MustCompile(`(?i)(?:https?:|wss?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"'<>)]*|@import`)
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		for _, m := range absolute.FindAll(body, -1) {
			if string(m) != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to an outside resource: %q", name, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAssets(t *testing.T) {
	tests := []struct {
		path, ctype string
	}{
		{"/static/app.js", "text/javascript; charset=utf-8"},
		{"/static/herald.js", "text/javascript; charset=utf-8"},
		{"/static/style.css", "text/css; charset=utf-8"},
		{"/static/icon.svg", "image/svg+xml"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := get(t, http.MethodGet, tt.path, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			h := rec.Header()
			if got := h.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type = %q, want %q", got, tt.ctype)
			}
			if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := h.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if rec.Body.Len() == 0 {
				t.Error("empty body")
			}
			etag := h.Get("ETag")
			if !strings.HasPrefix(etag, `"`) {
				t.Fatalf("ETag = %q, want a strong validator", etag)
			}
			again := get(t, http.MethodGet, tt.path, http.Header{"If-None-Match": {etag}})
			if again.Code != http.StatusNotModified {
				t.Errorf("revalidation with the ETag: status %d, want 304", again.Code)
			}
		})
	}
}

func TestHead(t *testing.T) {
	rec := get(t, http.MethodHead, "/", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("HEAD /: status %d", rec.Code)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("HEAD /: %d bytes of body", rec.Body.Len())
	}
}

func TestNotFound(t *testing.T) {
	for _, p := range []string{
		"/static/nope.js",
		"/static/",
		"/static",
		"/static/index.html", // the page lives at / only
		"/static/app.js/",
		"/static/../web.go",
		"/web.go",
		"/index.html",
		"/nope",
	} {
		if rec := get(t, http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, rec.Code)
		}
	}
}

func TestMethodNotAllowed(t *testing.T) {
	rec := get(t, http.MethodPost, "/", nil)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: status %d, want 405", rec.Code)
	}
	if got := rec.Header().Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow = %q, want GET, HEAD", got)
	}
}

// writeScripts copies every embedded .js file to dir and returns their paths.
func writeScripts(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(name, ".js") {
			return err
		}
		body, err := fs.ReadFile(files, name)
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Base(name))
		out[name] = p
		return os.WriteFile(p, body, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no .js files embedded")
	}
	return out
}

func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not on PATH; skipping JavaScript checks")
	}
	return node
}

func TestScriptSyntax(t *testing.T) {
	node := needNode(t)
	for name, p := range writeScripts(t, t.TempDir()) {
		out, err := exec.CommandContext(t.Context(), node, "--check", p).CombinedOutput()
		if err != nil {
			t.Errorf("node --check %s: %v\n%s", name, err, out)
		}
	}
}

// nodeHarness loads app.js in a context without a document, where it exposes
// its pure functions as heraldInternals, runs the cases read from stdin and
// prints the results as JSON. Frames are parsed as herald.js parses them.
const nodeHarness = `
const fs = require('node:fs');
const vm = require('node:vm');
const ctx = vm.createContext({});
vm.runInContext(fs.readFileSync(process.argv[2], 'utf8'), ctx, { filename: 'app.js' });
const h = ctx.heraldInternals;
const cases = JSON.parse(fs.readFileSync(0, 'utf8'));
const now = new Date(cases.now);
process.stdout.write(JSON.stringify({
  frames: cases.frames.map((f) => {
    let msg;
    try { msg = JSON.parse(f); } catch (_) { return null; }
    const p = h.postFromMessage(msg);
    return p && JSON.stringify([p.id, p.key, p.author, p.message]);
  }),
  times: cases.times.map((s) => h.relativeTime(new Date(s), now)),
}));
`

func TestScriptLogic(t *testing.T) {
	node := needNode(t)
	dir := t.TempDir()
	app := writeScripts(t, dir)["static/app.js"]
	harness := filepath.Join(dir, "harness.js")
	if err := os.WriteFile(harness, []byte(nodeHarness), 0o644); err != nil {
		t.Fatal(err)
	}

	// Each frame's post as [id, key, author, message], or "" when the page
	// ignores the frame.
	frames := []struct {
		frame string
		want  string
	}{
		{`{"type":"name.gossip","event":"New Post","sender":"ann","message":"hi <b>","id":7}`, `[7,"7","ann","hi <b>"]`},
		{`{"type":"name.gossip","sender":"bo","message":"x","id":"12","herald_id":"5-0"}`, `[12,"12","bo","x"]`},
		{`{"type":"error","error":"too big"}`, ""},
		{`{"type":"name.gossip","sender":"bo","message":"no id"}`, `[null,null,"bo","no id"]`},
		{`{"type":"name.gossip","message":"kept","herald_id":"5-1","herald_group":"gossip"}`, `[null,"h:gossip/5-1","","kept"]`},
		{`{"type":"name.gossip","message":"from an older server","herald_id":"5-1"}`, `[null,"h:/5-1","","from an older server"]`},
		{`{"type":"name.gossip","sender":"bo","message":"bad id","id":1.5}`, `[null,null,"bo","bad id"]`},
		{`{"type":"name.gossip","id":1.5}`, ""},
		{`{"type":"name.gossip","sender":"bo"}`, ""},
		{`{"type":"something.new","id":3}`, ""},
		{`not json`, ""},
		{`null`, ""},
		{`[1,2]`, ""},
	}
	times := []struct{ at, want string }{
		{"2026-01-02T12:00:00Z", "just now"},
		{"2026-01-02T12:00:30Z", "just now"}, // a server clock slightly ahead
		{"2026-01-02T11:55:00Z", "5 minutes ago"},
		{"2026-01-02T09:00:00Z", "3 hours ago"},
		{"2026-01-01T12:00:00Z", "yesterday"},
	}

	var in struct {
		Now    string   `json:"now"`
		Frames []string `json:"frames"`
		Times  []string `json:"times"`
	}
	in.Now = "2026-01-02T12:00:00Z"
	for _, f := range frames {
		in.Frames = append(in.Frames, f.frame)
	}
	for _, tm := range times {
		in.Times = append(in.Times, tm.at)
	}
	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(t.Context(), node, harness, app)
	cmd.Stdin = strings.NewReader(string(stdin))
	cmd.Env = append(os.Environ(), "LANG=en_US.UTF-8", "LC_ALL=en_US.UTF-8")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node harness: %v\n%s", err, stderr.String())
	}
	var got struct {
		Frames []*string `json:"frames"`
		Times  []string  `json:"times"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("harness output %q: %v", out, err)
	}

	for i, f := range frames {
		g := ""
		if got.Frames[i] != nil {
			g = *got.Frames[i]
		}
		if g != f.want {
			t.Errorf("postFromMessage(%s) = %q, want %q", f.frame, g, f.want)
		}
	}
	for i, tm := range times {
		if g := got.Times[i]; g != tm.want {
			t.Errorf("relativeTime(%s) = %q, want %q", tm.at, g, tm.want)
		}
	}
}

// pageHarness runs herald.js and app.js together in a node context with a
// small fake document, a fake WebSocket, fetch and timers, and plays the
// scenarios below against the page's feed. It prints the failed checks as a
// JSON list of strings.
const pageHarness = `
const fs = require('node:fs');
const vm = require('node:vm');
const failures = [];
let scenario = '';
function check(ok, what) { if (!ok) failures.push(scenario + ': ' + what); }

// El is the little of a DOM element that app.js uses.
class El {
  constructor(tag) {
    this.tagName = tag; this.children = []; this.parent = null; this.dataset = {}; this.attrs = {};
    this.className = ''; this.text = ''; this.hidden = false; this.value = ''; this.style = { setProperty() {} };
    const el = this, classes = () => el.className.split(' ').filter(Boolean);
    this.classList = {
      add(c) { if (!classes().includes(c)) el.className = classes().concat(c).join(' '); },
      remove(c) { el.className = classes().filter((x) => x !== c).join(' '); },
      toggle(c, on) { if (on) this.add(c); else this.remove(c); },
    };
  }
  get textContent() { return this.children.length ? this.children.map((c) => c.textContent).join('') : this.text; }
  set textContent(v) { for (const c of this.children) c.parent = null; this.children = []; this.text = String(v); }
  get firstElementChild() { return this.children[0] || null; }
  get lastElementChild() { return this.children[this.children.length - 1] || null; }
  append(...nodes) { for (const n of nodes) this.insertBefore(n, null); }
  insertBefore(n, ref) {
    n.remove();
    const i = ref ? this.children.indexOf(ref) : -1;
    if (i < 0) this.children.push(n); else this.children.splice(i, 0, n);
    n.parent = this;
    return n;
  }
  remove() { if (this.parent) { this.parent.children.splice(this.parent.children.indexOf(this), 1); this.parent = null; } }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  removeAttribute(k) { delete this.attrs[k]; }
  hasAttribute(k) { return k in this.attrs; }
  addEventListener(t, fn) { (this.ls = this.ls || {})[t] = fn; }
  fire(t, ev) { if (this.ls && this.ls[t]) return this.ls[t](Object.assign({ preventDefault() {} }, ev)); }
  focus() {}
  querySelectorAll(sel) {
    const out = [];
    const match = (e) => sel[0] === '.' ? e.className.split(' ').includes(sel.slice(1)) : e.tagName === sel;
    const walk = (e) => { for (const c of e.children) { if (match(c)) out.push(c); walk(c); } };
    walk(this);
    return out;
  }
  querySelector(sel) { return this.querySelectorAll(sel)[0] || null; }
}

function page() {
  const p = { sockets: [], fetches: [], timers: [], keys: 0 };
  const byId = {};
  p.byId = byId;
  for (const id of ['status', 'retry', 'feed', 'feed-empty', 'feed-notice', 'post-form', 'author', 'message', 'send', 'form-error']) {
    byId[id] = new El(id === 'feed' ? 'ol' : 'div');
  }
  const inStatus = { '#status .status-label': new El('span'), '#status .status-detail': new El('span') };
  class FakeWS {
    constructor(url) { this.url = url; this.readyState = 0; this.ls = {}; p.sockets.push(this); }
    addEventListener(t, fn) { (this.ls[t] = this.ls[t] || []).push(fn); }
    fire(t, ev) { for (const fn of this.ls[t] || []) fn(ev || {}); }
    open() { this.readyState = 1; this.fire('open'); }
    recv(obj) { this.fire('message', { data: JSON.stringify(obj) }); }
    drop(code) { this.readyState = 3; this.fire('close', { code: code }); }
    send() {}
    close() { this.readyState = 3; }
  }
  const timer = (fn, ms) => {
    if (ms === undefined) { // herald.js rethrowing what a handler threw
      try { fn(); } catch (err) { check(false, 'a handler threw: ' + err.stack); }
      return 0;
    }
    p.timers.push({ fn: fn, ms: ms });
    return p.timers.length;
  };
  const g = {
    URL: URL, AbortController: AbortController, console: console,
    location: { href: 'http://example.test/' },
    navigator: { onLine: true, platform: '' },
    localStorage: { getItem: () => null, setItem() {} },
    WebSocket: FakeWS,
    setTimeout: timer,
    clearTimeout: (id) => { if (id && p.timers[id - 1]) p.timers[id - 1].fn = null; },
    setInterval: () => 0, clearInterval() {}, // the countdown and the times' refresh: not run
    document: {
      visibilityState: 'visible',
      getElementById: (id) => byId[id] || null,
      querySelector: (sel) => inStatus[sel] || null,
      createElement: (tag) => new El(tag),
      addEventListener() {},
    },
    crypto: { randomUUID: () => 'key-' + (++p.keys) },
    fetch: (url, opts) => new Promise((resolve, reject) => {
      const f = {
        url: url, opts: opts,
        answer: (posts) => resolve({ ok: true, status: 200, json: async () => ({ posts: posts }) }),
        created: (post) => resolve({ ok: true, status: 201, json: async () => post }),
        fail: () => reject(new Error('network down')),
      };
      p.fetches.push(f);
      opts.signal.addEventListener('abort', () => reject(new Error('aborted')));
    }),
  };
  const ctx = vm.createContext(g);
  vm.runInContext('Math.random = () => 0.5;', ctx);
  vm.runInContext(fs.readFileSync(process.argv[2], 'utf8'), ctx, { filename: 'herald.js' });
  vm.runInContext(fs.readFileSync(process.argv[3], 'utf8'), ctx, { filename: 'app.js' });
  p.ws = () => p.sockets[p.sockets.length - 1];
  // feed lists what the page shows, top to bottom, as "id message" ("-" for
  // a post without an id).
  p.feed = () => JSON.stringify(byId.feed.children.map((li) =>
    (li.dataset.postId || '-') + ' ' + li.querySelector('.message').textContent));
  // load answers the newest GET /posts, after checking it is the only one
  // waiting, as the page must have superseded the others.
  p.load = async (posts) => {
    await settle();
    const f = p.fetches[p.fetches.length - 1];
    check(f && /^\/posts\?limit=\d+$/.test(f.url), 'no GET /posts: ' + (f && f.url));
    f.answer(posts);
    await settle();
  };
  // retry runs the reconnection herald.js scheduled.
  p.retry = () => {
    const t = p.timers.filter((t) => t.fn && t.ms < 10000).pop();
    check(t, 'no retry was scheduled');
    if (t) { const fn = t.fn; t.fn = null; fn(); }
  };
  return p;
}

const settle = () => new Promise((resolve) => setImmediate(resolve));
const post = (id, message) => ({ id: id, author: 'ana', message: message, created_at: '2026-01-02T12:00:00Z' });
const gossip = (id, message, hid) => ({ type: 'name.gossip', event: 'New Post', sender: 'ana', message: message, id: id, herald_id: hid, herald_group: 'gossip' });

(async () => {
  scenario = 'restart of an in-memory server';
  {
    const p = page();
    p.ws().open();
    await p.load([post(3, 'three'), post(2, 'two'), post(1, 'one')]);
    p.ws().recv(gossip(4, 'four', '100-0'));
    check(p.feed() === '["4 four","3 three","2 two","1 one"]', 'before the restart ' + p.feed());

    p.ws().drop(1012); // restarted, with an empty history and ids that start over
    p.retry();
    check(new URL(p.ws().url).searchParams.get('since') === 'gossip:100-0', 'resume URL ' + p.ws().url);
    p.ws().open();
    p.ws().recv({ type: 'resync', group: 'gossip' });
    p.ws().recv(gossip(1, 'new one', '5-0')); // while the reload is under way
    await p.load([post(1, 'new one')]);
    check(p.feed() === '["1 new one"]', 'after the resync ' + p.feed());
    p.ws().recv(gossip(2, 'new two', '5-1')); // an id the page showed before the restart
    check(p.feed() === '["2 new two","1 new one"]', 'a post after the restart ' + p.feed());
  }

  scenario = 'a connection that could not resume';
  {
    const p = page();
    p.ws().open();
    await p.load([post(2, 'two'), post(1, 'one')]);
    p.ws().drop(1012); // no history id seen: the next connection cannot resume
    p.retry();
    p.ws().open();
    await p.load([post(1, 'new one')]);
    check(p.feed() === '["1 new one"]', 'after reconnecting ' + p.feed());
  }

  scenario = 'messages without a post id';
  {
    const p = page();
    p.ws().open();
    await p.load([post(1, 'one')]);
    const note = { type: 'name.gossip', event: 'New Post', sender: 'ops', message: 'Deploy finished' };
    p.ws().recv(note);
    p.ws().recv(note); // no id to tell it from another: shown again
    p.ws().recv(Object.assign({ herald_id: '7-0', herald_group: 'gossip' }, note, { message: 'kept' }));
    p.ws().recv(gossip(2, 'two', '7-1'));
    p.ws().recv({ type: 'name.gossip', sender: 'ops' }); // nothing to show
    check(p.feed() === '["2 two","- kept","- Deploy finished","- Deploy finished","1 one"]', 'feed ' + p.feed());
  }

  scenario = 'a retried post keeps its Idempotency-Key';
  {
    const p = page();
    p.ws().open();
    await p.load([]);
    const send = async (message) => {
      p.byId.author.value = 'ana';
      p.byId.message.value = message;
      p.byId['post-form'].fire('submit');
      await settle();
      return p.fetches[p.fetches.length - 1];
    };
    const key = (f) => f && f.opts && f.opts.method === 'POST' && f.opts.headers['Idempotency-Key'];
    const first = await send('hello');
    check(key(first), 'the POST carries no Idempotency-Key');
    first.fail();
    await settle();
    const retry = await send('hello');
    check(key(retry) && key(retry) === key(first), 'the retry sent key ' + key(retry) + ', the first ' + key(first));
    retry.created(post(9, 'hello'));
    await settle();
    const next = await send('another');
    check(key(next) && key(next) !== key(first), 'a new post reused the key ' + key(next));
  }

  process.stdout.write(JSON.stringify(failures));
})().catch((err) => { process.stdout.write(JSON.stringify([String(err && err.stack)])); });
`

// TestFeedAcrossRestart runs the page against a server that restarts with
// an empty history and post ids that start over: the resync must replace
// the feed, so that the stale posts go and the new ones, whose ids repeat
// theirs, are shown. A reconnection that could not resume replaces the feed
// too, and a message without a post id (a backend's group send) is shown.
func TestFeedAcrossRestart(t *testing.T) {
	node := needNode(t)
	dir := t.TempDir()
	scripts := writeScripts(t, dir)
	harness := filepath.Join(dir, "page_harness.js")
	if err := os.WriteFile(harness, []byte(pageHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(t.Context(), node, harness, scripts["static/herald.js"], scripts["static/app.js"])
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node harness: %v\n%s", err, stderr.String())
	}
	var failures []string
	if err := json.Unmarshal(out, &failures); err != nil {
		t.Fatalf("harness output %q: %v", out, err)
	}
	for _, f := range failures {
		t.Error(f)
	}
}
