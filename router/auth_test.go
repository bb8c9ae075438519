package router_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/router"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hsToken(t testing.TB, exp time.Duration, groups ...string) string {
	return sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"sub": "user-42", "groups": groups, "exp": time.Now().Add(exp).Unix(),
	})
}

// authEnv serves /notifications/ with tokens required.
func authEnv(t *testing.T, tokens *router.Tokens, tweak ...func(*consumer.Server)) *httptest.Server {
	t.Helper()
	layer := channellayer.NewMemory()
	conns := &consumer.Server{Layer: layer, PublicGroups: []string{"gossip"}} // the demo's default
	for _, f := range tweak {
		f(conns)
	}
	rt := router.New(conns, nil)
	rt.Tokens = tokens
	rt.WebSocket("/notifications/", newDemo())
	(&router.API{Layer: layer}).Mount(rt.HTTP())
	srv := httptest.NewServer(rt)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = conns.Shutdown(ctx)
		srv.Close()
		_ = layer.Close()
	})
	return srv
}

func dialWith(t *testing.T, srv *httptest.Server, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/notifications/"+query, &websocket.DialOptions{HTTPHeader: header})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func subscribe(t *testing.T, c *websocket.Conn, group string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","group":"`+group+`"}`)); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(read(t, c)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokensRequired(t *testing.T) {
	tokens, err := router.NewHMACTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	srv := authEnv(t, tokens)
	good := hsToken(t, time.Hour, "user.42", "team.*")

	// Every place a token may come from.
	for name, dial := range map[string]func() (*websocket.Conn, *http.Response, error){
		"header": func() (*websocket.Conn, *http.Response, error) {
			return dialWith(t, srv, "", http.Header{"Authorization": {"Bearer " + good}})
		},
		"cookie": func() (*websocket.Conn, *http.Response, error) {
			return dialWith(t, srv, "", http.Header{"Cookie": {"herald_token=" + good}})
		},
		"query": func() (*websocket.Conn, *http.Response, error) { return dialWith(t, srv, "?token="+good, nil) },
	} {
		c, _, err := dial()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m := subscribe(t, c, "team.red"); m["type"] != "subscribed" {
			t.Errorf("%s: subscribe to an allowed group: %v", name, m)
		}
		if m := subscribe(t, c, "admin"); m["type"] != "error" || m["group"] != "admin" {
			t.Errorf("%s: subscribe to a forbidden group: %v", name, m)
		}
	}

	otherKey := []byte("another-secret-another-secret-xx")
	bad := map[string]string{
		"none":         "",
		"garbage":      "not.a.token",
		"forged":       sign(t, jwt.SigningMethodHS256, otherKey, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()}),
		"expired":      hsToken(t, -time.Hour),
		"no exp":       sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "x"}),
		"alg none":     sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()}),
		"wrong scheme": "Basic " + good,
	}
	for name, tok := range bad {
		h := http.Header{}
		if tok != "" {
			if strings.HasPrefix(tok, "Basic ") {
				h.Set("Authorization", tok)
			} else {
				h.Set("Authorization", "Bearer "+tok)
			}
		}
		_, resp, err := dialWith(t, srv, "", h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v %v, want 401", name, err, resp)
			continue
		}
		if tok != "" && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: the error repeats the token", name)
		}
	}
}

func TestTokenExpiresWhileConnected(t *testing.T) {
	tokens, _ := router.NewHMACTokens(secret)
	tokens.Leeway = -1
	srv := authEnv(t, tokens)
	c, _, err := dialWith(t, srv, "?token="+hsToken(t, 1500*time.Millisecond), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != consumer.StatusTokenExpired {
		t.Fatalf("got %v, want close %d", err, consumer.StatusTokenExpired)
	}
}

func TestPublicKeyTokens(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for name, tc := range map[string]struct {
		method jwt.SigningMethod
		priv   any
		pub    any
	}{
		"RS256": {jwt.SigningMethodRS256, rsaKey, &rsaKey.PublicKey},
		"ES256": {jwt.SigningMethodES256, ecKey, &ecKey.PublicKey},
	} {
		der, err := x509.MarshalPKIXPublicKey(tc.pub)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := router.NewPublicKeyTokens(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		good := sign(t, tc.method, tc.priv, jwt.MapClaims{"sub": "u", "groups": []string{"g"}, "exp": time.Now().Add(time.Hour).Unix()})
		id, err := tokens.Verify(good)
		if err != nil || id.User != "u" || len(id.Groups) != 1 {
			t.Errorf("%s: %+v %v", name, id, err)
		}
		// An HS256 token "signed" with the public key must not pass.
		confused := sign(t, jwt.SigningMethodHS256, der, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
		if _, err := tokens.Verify(confused); !errors.Is(err, router.ErrBadToken) {
			t.Errorf("%s: algorithm confusion accepted: %v", name, err)
		}
	}
	if _, err := router.NewHMACTokens([]byte("short")); err == nil {
		t.Error("a 5-byte HS256 secret was accepted")
	}
	if _, err := router.NewPublicKeyTokens([]byte("not pem")); err == nil {
		t.Error("a non-PEM public key was accepted")
	}
}

// FuzzVerifyToken: no token string, however broken, panics or passes.
func FuzzVerifyToken(f *testing.F) {
	f.Add(hsToken(f, time.Hour, "g"))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add("a.b.c")
	f.Add("")
	tokens, _ := router.NewHMACTokens(secret)
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := tokens.Verify(tok)
		if err == nil {
			// Only a correctly signed token can pass; the fuzzer cannot
			// forge one, so a pass must be a seed's mutation that kept
			// the signature valid.
			if id == nil {
				t.Fatal("nil identity without error")
			}
			return
		}
		if !errors.Is(err, router.ErrBadToken) {
			t.Fatalf("error not wrapping ErrBadToken: %v", err)
		}
	})
}

func TestClientAddr(t *testing.T) {
	addr := router.ClientAddr([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")})
	for _, tc := range []struct{ remote, xff, want string }{
		{"127.0.0.1:5000", "203.0.113.9", "203.0.113.9"},
		{"127.0.0.1:5000", "198.51.100.1, 203.0.113.9, 10.1.2.3", "203.0.113.9"},
		{"192.0.2.7:5000", "203.0.113.9", "192.0.2.7"}, // untrusted peer: header ignored
		{"127.0.0.1:5000", "", "127.0.0.1"},
		{"127.0.0.1:5000", "garbage", "127.0.0.1"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := addr(r); got != tc.want {
			t.Errorf("remote %s XFF %q: %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}

func TestForeignOriginRefused(t *testing.T) {
	srv := authEnv(t, nil)
	_, resp, err := dialWith(t, srv, "", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v, want 403", err, resp)
	}
	allowed := authEnv(t, nil, func(s *consumer.Server) { s.OriginPatterns = []string{"*.example.org"} })
	if _, _, err := dialWith(t, allowed, "", http.Header{"Origin": {"https://app.example.org"}}); err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		srv := authEnv(t, nil, func(s *consumer.Server) { s.MaxConnectionsPerAddr = 2 })
		for i := 0; i < 2; i++ {
			if _, _, err := dialWith(t, srv, "", nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, resp, err := dialWith(t, srv, "", nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("third connection from one address: %v %v, want 429", err, resp)
		}
	})
	t.Run("per instance", func(t *testing.T) {
		srv := authEnv(t, nil, func(s *consumer.Server) { s.MaxConnections = 1 })
		c, _, err := dialWith(t, srv, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, resp, err := dialWith(t, srv, "", nil); err == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("second connection: %v %v, want 503", err, resp)
		}
		c.Close(websocket.StatusNormalClosure, "")
		deadline := time.Now().Add(wait)
		for {
			if _, _, err := dialWith(t, srv, "", nil); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a freed slot was not reused")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestRateAndGroupLimits(t *testing.T) {
	srv := authEnv(t, nil, func(s *consumer.Server) {
		s.RateLimit, s.RateBurst = 5, 5
		s.MaxGroups = 2
		s.PublicGroups = []string{"gossip", "public.*"}
	})
	c, _, err := dialWith(t, srv, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	// gossip is joined on connect: one more fits, the third does not.
	if m := subscribe(t, c, "public.a"); m["type"] != "subscribed" {
		t.Fatalf("second group: %v", m)
	}
	if m := subscribe(t, c, "public.b"); m["type"] != "error" {
		t.Fatalf("third group: %v, want an error frame", m)
	}
	if m := subscribe(t, c, "private"); m["type"] != "error" {
		t.Fatalf("non-public group without a token: %v", m)
	}
	// A flood closes the connection with 1008.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i := 0; i < 20; i++ {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"whoami"}`)); err != nil {
			break
		}
	}
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("flood ended with %v, want 1008", err)
			}
			break
		}
	}
}
