package router_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/channelsredis"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/router"
	"github.com/heraldhq/herald/router/routertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

type env struct {
	t     *testing.T
	layer channellayer.Layer
	srv   *httptest.Server
	conns *consumer.Server
}

func newEnv(t *testing.T, layer channellayer.Layer, token string) *env {
	t.Helper()
	return newEnvWith(t, layer, token, nil)
}

// newEnvWith is newEnv with setup called on the router and consumers
// before the server starts.
func newEnvWith(t *testing.T, layer channellayer.Layer, token string, setup func(*router.Router, *consumer.Server)) *env {
	t.Helper()
	conns := &consumer.Server{PublicGroups: []string{"gossip"}} // the demo's default
	metrics := router.NewMetrics(conns, layer)
	plain := layer
	layer = metrics.Instrument(layer)
	conns.Layer = layer
	rt := router.New(conns, nil)
	rt.HTTP().Get("/metrics", metrics.Handler().ServeHTTP)
	rt.WebSocket("/notifications/", newDemo())
	rt.WebSocket("/rooms/{room}/", func(*http.Request) consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			return c.SendJSON(map[string]string{"type": "welcome", "room": c.Param("room")})
		}}
	})
	api := &router.API{Layer: layer, Token: token}
	api.Mount(rt.HTTP())
	if setup != nil {
		setup(rt, conns)
	}
	e := &env{t: t, layer: layer, srv: httptest.NewServer(rt), conns: conns}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = conns.Shutdown(ctx)
		e.srv.Close()
		_ = plain.Close()
	})
	return e
}

func (e *env) dial(path string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+path, nil)
	if c != nil {
		e.t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func (e *env) mustDial(path string) *websocket.Conn {
	e.t.Helper()
	c, _, err := e.dial(path)
	if err != nil {
		e.t.Fatalf("dial %s: %v", path, err)
	}
	e.waitOpen()
	return c
}

// waitOpen waits until every dialed connection is accepted (and so has
// joined its groups).
func (e *env) waitOpen() {
	deadline := time.Now().Add(wait)
	for e.conns.Stats().Open == 0 {
		if time.Now().After(deadline) {
			e.t.Fatal("connection not open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) do(method, path, body string, header ...string) (int, string, http.Header) {
	e.t.Helper()
	return routertest.Do(e.t, method, e.srv.URL+path, body, header...)
}

// read returns the next message c gets, failing t after a few seconds.
var read = routertest.Read

func TestProtocolRouting(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")

	// A WebSocket request to an unknown path: 404, no upgrade.
	if _, resp, err := e.dial("/nowhere/"); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown WebSocket path: %v %v, want 404", err, resp)
	}
	// A plain GET on a WebSocket-only path: 426 with a clear message.
	status, body, h := e.do("GET", "/notifications/", "")
	if status != http.StatusUpgradeRequired || !strings.Contains(body, "WebSocket") || h.Get("Upgrade") != "websocket" {
		t.Fatalf("plain GET on /notifications/: %d %s", status, body)
	}
	// Plain HTTP still reaches the HTTP routes.
	if status, body, _ := e.do("GET", "/healthz", ""); status != http.StatusOK {
		t.Fatalf("/healthz: %d %s", status, body)
	}
	if status, _, _ := e.do("GET", "/no/such/page", ""); status != http.StatusNotFound {
		t.Fatalf("unknown HTTP path: %d", status)
	}
	// Path parameters reach the consumer.
	c := e.mustDial("/rooms/kitchen/")
	if got := read(t, c); got != `{"room":"kitchen","type":"welcome"}` {
		t.Fatalf("welcome: %s", got)
	}
}

func TestGroupSendAPI(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	c := e.mustDial("/notifications/")
	msg := `{"type":"name.gossip","event":"New Post","sender":"api","message":"hi","id":1}`
	status, body, _ := e.do("POST", "/api/groups/gossip/send", msg, "Content-Type", "application/json")
	if status != http.StatusAccepted {
		t.Fatalf("send: %d %s", status, body)
	}
	// The sent object, field for field, then its history id.
	if got := read(t, c); !strings.HasPrefix(got, msg[:len(msg)-1]+`,"herald_id":"`) {
		t.Fatalf("client got %s", got)
	}
}

func TestChannelSendAPI(t *testing.T) {
	layer := channellayer.NewMemory()
	e := newEnv(t, layer, "")
	// A channel made directly on the layer stands in for a connection.
	got := make(chan string, 1)
	name, err := layer.NewChannel(memberFunc(func(_ string, data []byte) { got <- string(data) }))
	if err != nil {
		t.Fatal(err)
	}
	status, body, _ := e.do("POST", "/api/channels/"+name+"/send", `{"type":"direct","x":1}`)
	if status != http.StatusAccepted {
		t.Fatalf("send: %d %s", status, body)
	}
	select {
	case d := <-got:
		if d != `{"type":"direct","x":1}` {
			t.Fatalf("got %s", d)
		}
	case <-time.After(wait):
		t.Fatal("nothing delivered")
	}
	status, body, _ = e.do("POST", "/api/channels/specific.abc!gone/send", `{"type":"direct"}`)
	if status != http.StatusNotFound || !strings.Contains(body, "no_receivers") {
		t.Fatalf("send to unknown channel: %d %s", status, body)
	}
}

type memberFunc func(string, []byte)

func (f memberFunc) Deliver(t string, d []byte) { f(t, d) }

func TestAPIErrors(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	e.mustDial("/notifications/")
	cases := []struct {
		name, path, body string
		status           int
	}{
		{"bad JSON", "/api/groups/gossip/send", `{"type":`, 400},
		{"not an object", "/api/groups/gossip/send", `[1]`, 400},
		{"missing type", "/api/groups/gossip/send", `{"x":1}`, 400},
		{"type not a string", "/api/groups/gossip/send", `{"type":5}`, 400},
		{"empty type", "/api/groups/gossip/send", `{"type":""}`, 400},
		{"bad group name", "/api/groups/bad%20name/send", `{"type":"x"}`, 400},
		{"too long group name", "/api/groups/" + strings.Repeat("g", 100) + "/send", `{"type":"x"}`, 400},
		{"empty group", "/api/groups/empty/send", `{"type":"x"}`, 404},
		{"too large", "/api/groups/gossip/send", `{"type":"x","pad":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"invalid UTF-8", "/api/groups/gossip/send", "{\"type\":\"x\",\"s\":\"\xff\"}", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := e.do("POST", tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("%d %s, want %d", status, body, tc.status)
			}
			var eb router.ErrorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error == "" || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Fatalf("error body %q: %v", body, err)
			}
		})
	}
	if status, _, _ := e.do("GET", "/api/groups/gossip/send", ""); status != http.StatusMethodNotAllowed {
		t.Fatalf("GET on send: %d, want 405", status)
	}
}

func TestAPIToken(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "s3cret")
	e.mustDial("/notifications/")
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret"} {
		status, body, h := e.do("POST", "/api/groups/gossip/send", `{"type":"x"}`, "Authorization", auth)
		if status != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" {
			t.Fatalf("Authorization %q: %d %s, want 401", auth, status, body)
		}
	}
	if status, body, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip"}`, "Authorization", "Bearer s3cret"); status != http.StatusAccepted {
		t.Fatalf("right token: %d %s", status, body)
	}
}

// TestLayerDownIs503 uses a real Redis client aimed at a port where no
// Redis listens: the layer is down, and the API must say so.
func TestLayerDownIs503(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = client.Close() })
	layer, err := channellayer.NewRedis(client, channellayer.RedisConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, layer, "")
	status, body, h := e.do("POST", "/api/groups/gossip/send", `{"type":"x"}`)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
		t.Fatalf("send with Redis down: %d %s, want 503", status, body)
	}
	// The answer says the layer is down, not how: no dial error, no address.
	checkErrorBody(t, "send with Redis down", status, h, body)
	if strings.Contains(body, addr) {
		t.Errorf("send with Redis down: %s names Redis' address", body)
	}
	if _, body, _ := e.do("GET", "/metrics", ""); !strings.Contains(body, `herald_layer_errors_total{op="group_send"} 1`) {
		t.Errorf("layer error not counted:\n%s", body)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, channellayer.NewMemory(), "")
	c := e.mustDial("/notifications/")
	if status, _, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":1}`); status != http.StatusAccepted {
		t.Fatal(status)
	}
	read(t, c)
	e.do("POST", "/api/groups/nobody/send", `{"type":"x"}`)
	_, body, _ := e.do("GET", "/metrics", "")
	for _, want := range []string{
		`herald_connections_open{route="/notifications/"} 1`,
		`herald_connections_accepted_total{route="/notifications/"} 1`,
		`herald_messages_sent_total{route="/notifications/"} 1`,
		`herald_messages_dispatched_total{route="/notifications/"} 1`,
		`herald_group_members 1`,
		`herald_groups 1`,
		`herald_layer_send_duration_seconds_count{op="group_send",result="ok"} 1`,
		`herald_layer_send_duration_seconds_count{op="group_send",result="no_receivers"} 1`,
		`herald_messages_dropped_total{reason="slow_consumer"} 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

// TestFullIs429 sends to a channels_redis inbox that nobody reads until
// it is at capacity: the API must say "full, retry", not "down".
func TestFullIs429(t *testing.T) {
	layer, err := channelsredis.NewCore(layertest.RedisClient(t), channelsredis.CoreConfig{Prefix: layertest.Prefix(t), Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, layer, "")
	// A process that never reads its inbox.
	path := "/api/channels/specific." + strings.Repeat("0", 32) + "!a/send"
	if status, body, _ := e.do("POST", path, `{"type":"x"}`); status != http.StatusAccepted {
		t.Fatalf("first send: %d %s", status, body)
	}
	status, body, h := e.do("POST", path, `{"type":"x"}`)
	if status != http.StatusTooManyRequests || !strings.Contains(body, `"full"`) || h.Get("Retry-After") == "" {
		t.Fatalf("send to a full inbox: %d %s, want 429", status, body)
	}
}

// TestGroupSendKeptInHistory: a send to a group that has no member
// anywhere but keeps a history is stored, and a client that resumes gets
// it, so the API accepts it (202 "kept"); the same send to a group
// without history went nowhere (404 no_receivers). The API reads it from
// the send's result, through the metrics wrapper that newEnv puts around
// the layer.
func TestGroupSendKeptInHistory(t *testing.T) {
	policies := []channellayer.HistoryPolicy{
		{Pattern: "gossip", Size: 100, Age: time.Minute},
		{Pattern: "kept.*", Size: 100, Age: time.Minute},
	}
	for _, tc := range []struct {
		name     string
		newLayer func(t *testing.T) channellayer.Layer
	}{
		{"Memory", func(t *testing.T) channellayer.Layer {
			l, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{History: policies})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
		{"Redis", func(t *testing.T) channellayer.Layer {
			l, err := channellayer.NewRedis(layertest.RedisClient(t), channellayer.RedisConfig{Prefix: layertest.Prefix(t), History: policies})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := tc.newLayer(t)
			e := newEnv(t, layer, "")
			c := e.mustDial("/notifications/")

			// A member got it: "sent".
			status, body, _ := e.do("POST", "/api/groups/gossip/send", `{"type":"name.gossip","n":1}`)
			if status != http.StatusAccepted || body != "{\"status\":\"sent\"}\n" {
				t.Fatalf("send to a group with a member: %d %s", status, body)
			}
			read(t, c)

			// Nobody is in kept.orders, but it keeps a history: "kept", and
			// the history holds the message.
			msg := `{"type":"order.created","order":7}`
			status, body, _ = e.do("POST", "/api/groups/kept.orders/send", msg)
			if status != http.StatusAccepted || body != "{\"status\":\"kept\"}\n" {
				t.Fatalf("send to a memberless group with history: %d %s, want 202 kept", status, body)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			kept, err := layer.History(ctx, "kept.orders", "0-0", 10)
			if err != nil || len(kept) != 1 || !strings.HasPrefix(string(kept[0].Bytes()), msg[:len(msg)-1]+`,"herald_id":"`) {
				t.Fatalf("history of kept.orders: %d messages, %v, want the one sent", len(kept), err)
			}

			// No member and no history: nobody will ever see it.
			status, body, _ = e.do("POST", "/api/groups/orders/send", msg)
			var eb router.ErrorBody
			if status != http.StatusNotFound || json.Unmarshal([]byte(body), &eb) != nil || eb.Code != "no_receivers" {
				t.Fatalf("send to a memberless group without history: %d %s, want 404 no_receivers", status, body)
			}

			// The metrics tell the two apart as the API does.
			_, body, _ = e.do("GET", "/metrics", "")
			for _, want := range []string{
				`herald_layer_send_duration_seconds_count{op="group_send",result="kept"} 1`,
				`herald_layer_send_duration_seconds_count{op="group_send",result="no_receivers"} 1`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}
