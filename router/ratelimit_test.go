package router_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/router"
)

func TestClientAddrGroupsNetworks(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		bits              int
		remote, xff, want string
	}{
		// IPv6 clients of one /64 are one client; another /64 is another.
		{64, "[2001:db8:1:2::1]:5000", "", "2001:db8:1:2::/64"},
		{64, "[2001:db8:1:2:ffff:ffff:ffff:ffff]:5000", "", "2001:db8:1:2::/64"},
		{64, "[2001:db8:1:3::1]:5000", "", "2001:db8:1:3::/64"},
		{48, "[2001:db8:1:3::1]:5000", "", "2001:db8:1::/48"},
		{128, "[2001:db8:1:3::1]:5000", "", "2001:db8:1:3::1"},
		{0, "[2001:db8:1:3::1]:5000", "", "2001:db8:1:3::/64"}, // out of range: the default
		// IPv4 is the whole address, however it is written.
		{64, "192.0.2.7:5000", "", "192.0.2.7"},
		{64, "[::ffff:192.0.2.7]:5000", "", "192.0.2.7"},
		// Forwarded entries with a port are their address.
		{64, "127.0.0.1:5000", "203.0.113.9:4711", "203.0.113.9"},
		{64, "127.0.0.1:5000", "198.51.100.1:1, 203.0.113.9:4711", "203.0.113.9"},
		{64, "127.0.0.1:5000", "[2001:db8:9:9::5]:4711", "2001:db8:9:9::/64"},
		{64, "127.0.0.1:5000", "[2001:db8:9:9::5]", "2001:db8:9:9::/64"},
		{64, "[::1]:5000", "2001:db8:9:9::5, 127.0.0.1:80", "2001:db8:9:9::/64"},
		// Still refused: garbage, and a port without brackets on IPv6.
		{64, "127.0.0.1:5000", "203.0.113.9, garbage", "127.0.0.1"},
		{64, "127.0.0.1:5000", "2001:db8::1:80:x", "127.0.0.1"},
		{64, "127.0.0.1:5000", "203.0.113.9:notaport", "127.0.0.1"},
		// An untrusted peer's header is ignored.
		{64, "[2001:db8:1:2::1]:5000", "203.0.113.9", "2001:db8:1:2::/64"},
	} {
		addr := router.ClientAddrPrefix(trusted, tc.bits)
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := addr(r); got != tc.want {
			t.Errorf("/%d remote %s XFF %q: %s, want %s", tc.bits, tc.remote, tc.xff, got, tc.want)
		}
	}
	// ClientAddr groups by /64.
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8:1:2::77]:1"
	if got := router.ClientAddr(nil)(r); got != "2001:db8:1:2::/64" {
		t.Errorf("ClientAddr: %s, want the /64", got)
	}
}

// limitedAPI serves the API behind lim.
func limitedAPI(t *testing.T, lim *router.RateLimit, token string) *httptest.Server {
	t.Helper()
	layer := channellayer.NewMemory()
	r := chi.NewRouter()
	(&router.API{Layer: layer, Token: token, Limit: lim}).Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(func() { srv.Close(); _ = layer.Close() })
	return srv
}

func post(t *testing.T, srv *httptest.Server, path, from string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{"author":"a","message":"m","type":"name.gossip"}`))
	req.Header.Set("Content-Type", "application/json")
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestRateLimitAnswers429(t *testing.T) {
	var refused []string
	lim := &router.RateLimit{
		Rate: 0.5, Burst: 3, Token: "backend-token",
		ClientAddr: router.ClientAddr([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
		Refused:    func(reason string) { refused = append(refused, reason) },
	}
	srv := limitedAPI(t, lim, "backend-token")
	for _, path := range []string{"/api/groups/gossip/send"} {
		t.Run(path, func(t *testing.T) {
			from := "203.0.113." + strconv.Itoa(len(path))
			auth := []string{"Authorization", "Bearer wrong"} // 401, and limited
			for i := 0; i < 3; i++ {
				if resp := post(t, srv, path, from, auth...); resp.StatusCode == http.StatusTooManyRequests {
					t.Fatalf("request %d within the burst: 429", i)
				}
			}
			// With the API token there is no limit at all.
			for i := 0; i < 10; i++ {
				if resp := post(t, srv, path, from, "Authorization", "Bearer backend-token"); resp.StatusCode == http.StatusTooManyRequests {
					t.Fatalf("request %d with the API token: 429", i)
				}
			}
			resp := post(t, srv, path, from, auth...)
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("past the burst: %d, want 429", resp.StatusCode)
			}
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || ra < 1 || ra > 2 {
				t.Errorf("Retry-After %q, want whole seconds from 1 to 2 (a token every 2 s)", resp.Header.Get("Retry-After"))
			}
			var body router.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Code != "rate_limited" || body.Error == "" {
				t.Errorf("body %+v (%v), want code rate_limited and a message", body, err)
			}
			// Another address is served.
			if resp := post(t, srv, path, "198.51.100.1", auth...); resp.StatusCode == http.StatusTooManyRequests {
				t.Fatalf("another address: 429")
			}
		})
	}
	if len(refused) != 1 || refused[0] != "rate_limited" {
		t.Errorf("refusals reported: %v, want one rate_limited", refused)
	}
	// /healthz is not limited.
	for i := 0; i < 5; i++ {
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz: %v %v", resp, err)
		}
		resp.Body.Close()
	}
}

func TestRateLimitEvictsIdleBuckets(t *testing.T) {
	lim := &router.RateLimit{Rate: 100, Burst: 1,
		ClientAddr: router.ClientAddr([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})}
	srv := limitedAPI(t, lim, "")
	for i := 0; i < 200; i++ {
		post(t, srv, "/api/groups/gossip/send", fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
	}
	if n := lim.Len(); n < 100 {
		t.Fatalf("%d buckets after 200 addresses, want most of them", n)
	}
	// Every bucket refills within 10 ms; the next request after a second
	// sweeps them out.
	time.Sleep(1100 * time.Millisecond)
	post(t, srv, "/api/groups/gossip/send", "192.0.2.1")
	if n := lim.Len(); n > 1 {
		t.Fatalf("%d buckets after they all went idle, want 1", n)
	}
	// A bounded table: past MaxKeys, new addresses share one bucket.
	capped := &router.RateLimit{Rate: 0.001, Burst: 1, MaxKeys: 10,
		ClientAddr: router.ClientAddr([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})}
	srv = limitedAPI(t, capped, "")
	refused := 0
	for i := 0; i < 50; i++ {
		if post(t, srv, "/api/groups/gossip/send", fmt.Sprintf("10.1.0.%d", i+1)).StatusCode == http.StatusTooManyRequests {
			refused++
		}
	}
	if n := capped.Len(); n != 10 {
		t.Errorf("%d buckets with MaxKeys 10", n)
	}
	if refused != 39 {
		t.Errorf("%d of the 40 addresses past MaxKeys refused, want 39 (they share one bucket of 1)", refused)
	}
}

func TestTokenMaxLifetime(t *testing.T) {
	tokens, err := router.NewHMACTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	tokens.MaxLifetime = 24 * time.Hour
	now := time.Now()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		why    string // in the error; empty: accepted
	}{
		{"within", jwt.MapClaims{"sub": "u", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, ""},
		{"exactly", jwt.MapClaims{"sub": "u", "iat": now.Add(-time.Hour).Unix(), "exp": now.Add(23 * time.Hour).Unix()}, ""},
		{"too long", jwt.MapClaims{"sub": "u", "iat": now.Unix(), "exp": now.Add(25 * time.Hour).Unix()}, "lifetime"},
		{"a year", jwt.MapClaims{"sub": "u", "iat": now.Add(-time.Minute).Unix(), "exp": now.Add(365 * 24 * time.Hour).Unix()}, "more than the maximum 24h0m0s"},
		{"no iat", jwt.MapClaims{"sub": "u", "exp": now.Add(time.Hour).Unix()}, `no "iat"`},
		{"iat in the future", jwt.MapClaims{"sub": "u", "iat": now.Add(300 * 24 * time.Hour).Unix(), "exp": now.Add(301 * 24 * time.Hour).Unix()}, "before issued"},
	} {
		tok := sign(t, jwt.SigningMethodHS256, secret, tc.claims)
		_, err := tokens.Verify(tok)
		switch {
		case tc.why == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.why != "" && (err == nil || !strings.Contains(err.Error(), tc.why)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.why)
		case err != nil && strings.Contains(err.Error(), tok):
			t.Errorf("%s: the error repeats the token", tc.name)
		}
	}

	// Over the wire: 401 before the upgrade, saying why, not repeating
	// the token.
	srv := authEnv(t, tokens)
	long := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u", "iat": now.Unix(), "exp": now.Add(48 * time.Hour).Unix()})
	_, resp, err := dialWith(t, srv, "?token="+long, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a 48h token: %v %v, want 401", err, resp)
	}
	var body router.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Code != "bad_token" || !strings.Contains(body.Error, "lifetime") || strings.Contains(body.Error, long) {
		t.Fatalf("401 body %+v: want code bad_token, the reason, and not the token", body)
	}
	ok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	if _, _, err := dialWith(t, srv, "?token="+ok, nil); err != nil {
		t.Fatalf("a 1h token: %v", err)
	}
}
