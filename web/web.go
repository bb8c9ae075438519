package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static
var files embed.FS

// indexFile is served at "/" and nowhere else: relative asset links in it
// would resolve wrongly from /static/index.html.
const indexFile = "static/index.html"

// contentTypes pins the types of the files we ship, so the answer does not
// depend on the host's mime.types (some map .js to application/javascript,
// some lack .svg).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// pageCSP keeps the page to its own origin. 'self' in connect-src covers
// ws: and wss: on the same host.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; " +
	"frame-ancestors 'none'"

type asset struct {
	name  string // file name, for http.ServeContent
	body  []byte
	ctype string
	etag  string
	page  bool // the HTML document: gets the CSP
}

type handler struct {
	routes map[string]*asset // by URL path
}

// Handler returns the handler for the page and its assets. See the package
// documentation for its routes and headers. All calls share one handler.
func Handler() http.Handler {
	return shared()
}

var shared = sync.OnceValue(func() *handler {
	h, err := newHandler(files)
	if err != nil {
		// The files are compiled in; failing here is a build defect.
		panic("web: " + err.Error())
	}
	return h
})

func newHandler(fsys fs.FS) (*handler, error) {
	h := &handler{routes: make(map[string]*asset)}
	err := fs.WalkDir(fsys, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{
			name:  path.Base(name),
			body:  body,
			ctype: contentType(name, body),
			etag:  `"` + hex.EncodeToString(sum[:12]) + `"`,
		}
		if name == indexFile {
			a.page = true
			h.routes["/"] = a
		} else {
			h.routes["/"+name] = a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h.routes["/"] == nil {
		return nil, fs.ErrNotExist
	}
	return h, nil
}

func contentType(name string, body []byte) string {
	ext := strings.ToLower(path.Ext(name))
	if ct, ok := contentTypes[ext]; ok {
		return ct
	}
	if ct := mime.TypeByExtension(ext); ct != "" {
		return ct
	}
	return http.DetectContentType(body)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.routes[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", a.etag)
	hdr.Set("X-Content-Type-Options", "nosniff")
	if a.page {
		hdr.Set("Content-Security-Policy", pageCSP)
		hdr.Set("Referrer-Policy", "same-origin")
	}
	// ServeContent answers If-None-Match with 304, and HEAD and Range.
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}
