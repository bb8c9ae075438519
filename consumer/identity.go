package consumer

import (
	"context"
	"path"
	"time"
)

// Identity is what a verified token says about a client. The router puts
// it in the request's context (WithIdentity) before the consumer runs.
type Identity struct {
	// User is the token's subject.
	User string
	// Groups are the patterns (path.Match syntax, such as "user.42" or
	// "team.*") of the groups the client may join.
	Groups []string
	// Expires is when the token stops being valid; the connection is
	// closed with StatusTokenExpired then. Zero means never.
	Expires time.Time
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity in ctx, or nil for an anonymous
// client.
func IdentityFrom(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

// matchAny reports whether name matches one of patterns.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, name); ok && err == nil {
			return true
		}
	}
	return false
}
