// Package routertest holds the checks that the tests of router, and of
// the applications mounted on it, make of the router's answers.
package routertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald/router"
)

// Leaks are fragments of internal errors that no answer may hold.
var Leaks = []string{"dial tcp", "127.0.0.1:", "connection refused", "FATAL", "SQLSTATE", "pq:", "pgconn", "constraint",
	"channellayer:", "notifier:", "consumer:", "router:", "json:", "strconv", "s3cret"}

// CheckErrorBody fails t unless body is a JSON error answer with a code
// and a sentence, and none of the Leaks, and returns it.
func CheckErrorBody(t testing.TB, what string, status int, h http.Header, body string) router.ErrorBody {
	t.Helper()
	var eb router.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code == "" || eb.Error == "" {
		t.Errorf("%s: %d %q: not a JSON error body with a code and a sentence (%v)", what, status, body, err)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want JSON", what, ct)
	}
	for _, l := range Leaks {
		if strings.Contains(body, l) {
			t.Errorf("%s: %d %q holds %q", what, status, body, l)
		}
	}
	return eb
}
