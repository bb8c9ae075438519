package router

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/consumer"
)

// ErrBadToken reports a token that is missing, malformed, forged or
// expired. Its message never contains the token.
var ErrBadToken = errors.New("router: bad token")

// Tokens verifies the signed tokens (JWT) that clients present to open a
// WebSocket. Make one with NewHMACTokens or NewPublicKeyTokens; the zero
// value is not usable.
//
// A token is read from, in order: the Authorization header ("Bearer
// <token>"), the cookie named CookieName, and the query parameter named
// QueryParam (browsers cannot set headers on a WebSocket). Its claims
// must include "exp"; "sub" becomes the user id and "groups", a list of
// group name patterns, the groups the client may join.
type Tokens struct {
	// CookieName is the cookie that may carry the token. Default
	// "herald_token".
	CookieName string
	// QueryParam is the query parameter that may carry the token. Default
	// "token".
	QueryParam string
	// Issuer and Audience, when set, must match the token's "iss" and
	// "aud".
	Issuer, Audience string
	// Leeway allows for clock skew when checking "exp" and "nbf". Default
	// 30s; negative for none.
	Leeway time.Duration
	// MaxLifetime, when positive, is the longest lifetime a token may be
	// issued for: its "exp" minus its "iat". A token that claims more,
	// or has no "iat", or whose "iat" is in the future (beyond Leeway), is
	// refused. Zero: any lifetime.
	MaxLifetime time.Duration

	key     any
	methods []string
}

// NewHMACTokens verifies HS256 tokens signed with secret, which must be
// at least 32 bytes.
func NewHMACTokens(secret []byte) (*Tokens, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("router: HS256 secret is %d bytes, want at least 32", len(secret))
	}
	return &Tokens{key: secret, methods: []string{"HS256"}}, nil
}

// NewPublicKeyTokens verifies RS256 or ES256 tokens with the PEM-encoded
// public key (PKIX "PUBLIC KEY", or an RSA "RSA PUBLIC KEY").
func NewPublicKeyTokens(pemData []byte) (*Tokens, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("router: no PEM block in the public key")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("router: PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("router: parsing the public key: %w", err)
	}
	switch key.(type) {
	case *rsa.PublicKey:
		return &Tokens{key: key, methods: []string{"RS256"}}, nil
	case *ecdsa.PublicKey:
		return &Tokens{key: key, methods: []string{"ES256"}}, nil
	default:
		return nil, fmt.Errorf("router: public key of type %T: want RSA or ECDSA", key)
	}
}

type claims struct {
	jwt.RegisteredClaims
	Groups []string `json:"groups"`
}

// Verify checks a token and returns the identity it carries.
func (t *Tokens) Verify(token string) (*consumer.Identity, error) {
	leeway := t.Leeway
	switch {
	case leeway == 0:
		leeway = 30 * time.Second
	case leeway < 0:
		leeway = 0
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(t.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
	}
	if t.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(t.Issuer))
	}
	if t.Audience != "" {
		opts = append(opts, jwt.WithAudience(t.Audience))
	}
	if t.MaxLifetime > 0 {
		opts = append(opts, jwt.WithIssuedAt()) // an "iat" in the future is refused
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.key, nil }, opts...)
	if err != nil {
		// jwt's messages describe the failure, never the token itself.
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if t.MaxLifetime > 0 {
		if c.IssuedAt == nil {
			return nil, lifetimeError(fmt.Sprintf("the token has no \"iat\" claim, which is required when tokens may live at most %v", t.MaxLifetime))
		}
		if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life > t.MaxLifetime {
			return nil, lifetimeError(fmt.Sprintf("the token's lifetime (exp - iat) is %v, more than the maximum %v", life, t.MaxLifetime))
		}
	}
	id := &consumer.Identity{User: c.Subject, Groups: c.Groups}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Add(leeway)
	}
	return id, nil
}

// FromRequest returns the token r carries, or an error wrapping
// ErrBadToken if it carries none.
func (t *Tokens) FromRequest(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
			return "", fmt.Errorf("%w: Authorization header is not \"Bearer <token>\"", ErrBadToken)
		}
		return tok, nil
	}
	name := t.CookieName
	if name == "" {
		name = "herald_token"
	}
	if c, err := r.Cookie(name); err == nil && c.Value != "" {
		return c.Value, nil
	}
	param := t.QueryParam
	if param == "" {
		param = "token"
	}
	if tok := r.URL.Query().Get(param); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("%w: no token (Authorization: Bearer, cookie %s or query parameter %s)", ErrBadToken, name, param)
}

// authenticate answers 401 and returns nil when r has no valid token;
// otherwise it returns r carrying the token's identity.
func (t *Tokens) authenticate(w http.ResponseWriter, r *http.Request) *http.Request {
	tok, err := t.FromRequest(r)
	msg := ""
	if err != nil {
		msg = PlainError(err) // where a token may be given
	}
	var id *consumer.Identity
	if err == nil {
		if id, err = t.Verify(tok); err != nil {
			// The JWT library's reasons are its own words: the client is
			// told what to do. A lifetime refusal is Herald's own.
			msg = "the token is invalid or expired; get a new one"
			var le lifetimeError
			if errors.As(err, &le) {
				msg = string(le)
			}
		}
	}
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
		WriteErrorCode(w, http.StatusUnauthorized, CodeBadToken, msg)
		return nil
	}
	return r.WithContext(consumer.WithIdentity(r.Context(), id))
}

// lifetimeError refuses a token that lives longer than Tokens.MaxLifetime
// allows; its text is for the client.
type lifetimeError string

func (e lifetimeError) Error() string { return "router: bad token: " + string(e) }
func (e lifetimeError) Unwrap() error { return ErrBadToken }
