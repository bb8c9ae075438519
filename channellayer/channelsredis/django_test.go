package channelsredis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/channelsredis"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/consumer"
)

// The Django project in testdata/django is the classic Channels notifier:
// a pre_save signal on Post does group_send("gossip", {"type":
// "name.gossip", ...}) and a consumer at /notifications/ forwards the
// group's messages. TestDjango runs it, served by daphne, next to a
// Herald instance on the same Redis, for each channels_redis layer, with
// and without encryption, and checks that every message crosses over
// exactly once.

// djangoPython returns a Python that can import Django, Channels,
// channels_redis and daphne: $HERALD_PYTHON, else Debian's python3, else
// the python3 on PATH. It skips the test when there is none (fails with
// HERALD_REQUIRE_SERVICES=1).
func djangoPython(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("HERALD_PYTHON"), "/usr/bin/python3", "python3"}
	var lastErr error
	for _, py := range candidates {
		if py == "" {
			continue
		}
		out, err := exec.Command(py, "-c", "import django, channels, channels_redis, daphne").CombinedOutput()
		if err == nil {
			return py
		}
		lastErr = fmt.Errorf("%s: %v: %s", py, err, strings.TrimSpace(string(out)))
	}
	layertest.Unavailable(t, "Python with Django, Channels, channels_redis and daphne (apt-get install python3-django python3-django-channels python3-channels-redis daphne)", lastErr)
	return ""
}

// pubsubEncrypts reports whether the installed channels_redis encrypts
// pub/sub traffic, as releases after 4.0.0 (Debian 12's) do.
func pubsubEncrypts(t *testing.T, py string) bool {
	out, err := exec.Command(py, "-c", "import channels_redis.pubsub as p; print(hasattr(p.RedisPubSubChannelLayer, 'serialize') and 'symmetric_encryption_keys' in p.RedisPubSubChannelLayer.__init__.__code__.co_varnames)").CombinedOutput()
	if err != nil {
		t.Fatalf("probing channels_redis: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)) == "True"
}

func TestDjango(t *testing.T) {
	py := djangoPython(t)
	rdb := redisClient(t)
	for _, kind := range []string{"core", "pubsub"} {
		for _, keys := range [][]string{nil, {"first secret", "retired secret"}} {
			name := kind
			if keys != nil {
				name += "/encrypted"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				if kind == "pubsub" && keys != nil && !pubsubEncrypts(t, py) {
					t.Skip("the installed channels_redis cannot encrypt pub/sub traffic (only releases after Debian 12's 4.0.0 can); Herald's side is covered by TestPubSub/Encrypted")
				}
				testDjango(t, py, rdb, kind, keys)
			})
		}
	}
}

type djangoEnv struct {
	t   *testing.T
	py  string
	dir string
	env []string
}

func (d *djangoEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.py, args...)
	cmd.Dir = d.dir
	cmd.Env = d.env
	return cmd
}

// manage runs one manage.py command and waits for it.
func (d *djangoEnv) manage(args ...string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := d.command(ctx, append([]string{"manage.py"}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// daphne serves the project on a listener the test made, so there is no
// race for a port, and returns its address.
func (d *djangoEnv) daphne() string {
	d.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		d.t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // f keeps the socket open and listening
	var logs strings.Builder
	cmd := d.command(context.Background(), "-m", "daphne", "--fd", "3", "notifier.asgi:application")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	_ = f.Close()
	d.t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if d.t.Failed() {
			d.t.Logf("daphne output:\n%s", logs.String())
		}
	})
	return addr
}

// client is one WebSocket connection that reads JSON objects.
type client struct {
	t    *testing.T
	name string
	ws   *websocket.Conn
}

func dial(t *testing.T, name, url string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("%s: dialing %s: %v", name, url, err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return &client{t: t, name: name, ws: ws}
}

// next reads the next message and fails unless its fields include want.
func (c *client) next(want map[string]any) map[string]any {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, data, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatalf("%s: waiting for %v: %v", c.name, want, err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		c.t.Fatalf("%s: %s is not a JSON object", c.name, data)
	}
	for k, v := range want {
		if got[k] != v {
			c.t.Fatalf("%s: got %s, want fields %v", c.name, data, want)
		}
	}
	return got
}

func testDjango(t *testing.T, py string, rdb *redis.Client, kind string, keys []string) {
	prefix := layertest.Prefix(t)
	abs, err := filepath.Abs("testdata/django")
	if err != nil {
		t.Fatal(err)
	}
	d := &djangoEnv{t: t, py: py, dir: abs, env: append(os.Environ(),
		"PYTHONDONTWRITEBYTECODE=1",
		"DJANGO_SETTINGS_MODULE=notifier.settings",
		"DJANGO_DB="+filepath.Join(t.TempDir(), "db.sqlite3"),
		"REDIS_URL="+layertest.RedisURL(),
		"CHANNEL_LAYER="+kind,
		"CHANNEL_PREFIX="+prefix,
		"CHANNEL_KEYS="+strings.Join(keys, ","),
	)}
	d.manage("migrate", "-v0")

	// Herald, on the same Redis and settings.
	var layer channellayer.Layer
	if kind == "core" {
		layer, err = channelsredis.NewCore(rdb, channelsredis.CoreConfig{Prefix: prefix, SymmetricEncryptionKeys: keys})
	} else {
		layer, err = channelsredis.NewPubSub(rdb, channelsredis.PubSubConfig{Prefix: prefix, SymmetricEncryptionKeys: keys})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = layer.Close() })
	heraldURL := herald(t, layer)
	djangoURL := "ws://" + d.daphne() + "/notifications/"

	h := dial(t, "Herald client", heraldURL)
	heraldChannel := h.next(map[string]any{"type": "hello"})["channel"].(string)
	dj := dial(t, "Django client", djangoURL)
	waitForDjangoMember(t, rdb, kind, prefix, heraldChannel)

	// A post saved in Django reaches both fleets' clients.
	d.manage("newpost", "ana", "Hello from Django")
	post := map[string]any{"type": "name.gossip", "event": "New Post", "sender": "ana", "message": "Hello from Django"}
	h.next(post)
	dj.next(post)

	// A group send from Herald reaches both too.
	fromHerald := map[string]any{"type": "name.gossip", "event": "New Post", "sender": "herald", "message": "Hello from Herald"}
	if err := groupSend(t, layer, fromHerald); err != nil {
		t.Fatal(err)
	}
	h.next(fromHerald)
	dj.next(fromHerald)

	// Django's send() to a Herald connection's channel reaches it alone.
	direct := map[string]any{"type": "name.gossip", "event": "Direct", "sender": "django", "message": "just for you"}
	d.manage("sendto", heraldChannel, string(mustJSON(t, direct)))
	h.next(direct)

	// Nothing came twice: the next message each side sees is this one.
	end := map[string]any{"type": "name.gossip", "event": "End", "sender": "herald", "message": "end"}
	if err := groupSend(t, layer, end); err != nil {
		t.Fatal(err)
	}
	h.next(end)
	dj.next(end)
}

// groupSend sends msg to gossip with a deadline of its own: a Django
// management command run before it can take longer than any shared one.
func groupSend(t *testing.T, layer channellayer.Layer, msg map[string]any) error {
	ctx, cancel := context.WithTimeout(context.Background(), layertest.Timeout)
	defer cancel()
	_, err := layer.GroupSend(ctx, "gossip", mustMessage(t, msg))
	return err
}

// herald serves /notifications/ with the notification consumer, which
// also tells its client its channel name.
func herald(t *testing.T, layer channellayer.Layer) string {
	routes := &consumer.Routes{}
	routes.HandleFunc("name.gossip", consumer.ForwardToClient)
	cons := &consumer.JSON{
		Routes: routes,
		OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			if err := c.Layer().GroupAdd(ctx, "gossip", c.Channel()); err != nil {
				return err
			}
			return c.SendJSON(map[string]string{"type": "hello", "channel": c.Channel()})
		},
		OnDisconnect: func(c *consumer.Conn, _ websocket.StatusCode) {
			_ = c.Layer().GroupDiscard(context.Background(), "gossip", c.Channel())
		},
	}
	srv := &consumer.Server{Layer: layer}
	route := consumer.Route{Pattern: "/notifications/", New: func(*http.Request) consumer.Consumer { return cons }}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Serve(w, r, route)
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	})
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/notifications/"
}

// waitForDjangoMember waits until the Django consumer has joined
// "gossip": its accept comes before its group_add, so the socket being
// open is not enough.
func waitForDjangoMember(t *testing.T, rdb *redis.Client, kind, prefix, heraldChannel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		switch kind {
		case "core":
			members, err := rdb.ZRange(ctx, prefix+":group:gossip", 0, -1).Result()
			if err == nil && len(members) >= 2 {
				return
			}
		case "pubsub":
			n, err := rdb.PubSubNumSub(ctx, prefix+"__group__gossip").Result()
			if err == nil && n[prefix+"__group__gossip"] >= 2 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the Django consumer did not join gossip (Herald's channel %s)", heraldChannel)
		case <-tick.C:
		}
	}
}

func mustMessage(t *testing.T, v any) channellayer.Message {
	t.Helper()
	m, err := channellayer.NewMessage(v)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
