// Package pgtest gives each test its own empty database on a real
// PostgreSQL server, so tests can run in parallel and leave nothing
// behind.
//
// The server is named by DATABASE_URL, by default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable; the role
// must be allowed to create databases. When the server cannot be reached
// the test is skipped, unless HERALD_REQUIRE_SERVICES=1, as in CI, where
// it fails instead.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultURL is used when DATABASE_URL is empty.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns DATABASE_URL, or DefaultURL if it is empty. It names
// a database that tests share, such as postgres, for work that cannot be
// done from inside the test's own database.
func ServerURL() string {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// NewDatabase creates a database with a unique name, drops it (closing
// any connection left to it) when the test ends, and returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	adminURL := ServerURL()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		msg := fmt.Sprintf("pgtest: PostgreSQL at DATABASE_URL (default %s) is unreachable: %v", DefaultURL, err)
		if os.Getenv("HERALD_REQUIRE_SERVICES") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (set HERALD_REQUIRE_SERVICES=1 to fail instead)")
	}
	defer admin.Close(ctx)

	name := fmt.Sprintf("herald_test_%016x", rand.Uint64())
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		// The test's context is done by now; the drop gets its own.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(adminURL, name)
}

// withDatabase returns connString with its database replaced by name.
// It handles URLs and keyword/value strings, in which a later keyword
// overrides an earlier one.
func withDatabase(connString, name string) string {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		if u, err := url.Parse(connString); err == nil {
			u.Path = "/" + name
			u.RawPath = ""
			q := u.Query()
			q.Del("dbname")
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return connString + " dbname=" + name
}
