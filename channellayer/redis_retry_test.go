package channellayer_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
)

// TestRedisSendRetriedAfterStall sends through a path that stalls past
// the client's read timeout and then delivers everything, as a paused
// Redis does when it continues: go-redis sends the command again on a
// new connection, and Redis runs every copy. The message must reach the
// member once, keyed by the caller or not.
func TestRedisSendRetriedAfterStall(t *testing.T) {
	srv := layertest.StartRedis(t)
	proxy := layertest.StartProxy(t, srv.Addr)
	const readTimeout = 200 * time.Millisecond
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: readTimeout, MaxRetries: 3})
	direct := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = viaProxy.Close(); _ = direct.Close() })
	prefix := layertest.Prefix(t)
	cfg := channellayer.RedisConfig{Prefix: prefix, History: layertest.History}
	sender, err := channellayer.NewRedis(viaProxy, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	receiver, err := channellayer.NewRedis(direct, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	ctx := context.Background()

	for _, tc := range []struct{ name, group, key string }{
		{"history", "hist.stall", ""},
		{"history keyed", "hist.stall-keyed", "request-1"},
		{"no history", "stall", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := layertest.NewInbox(16)
			ch, err := receiver.NewChannel(in)
			if err != nil {
				t.Fatal(err)
			}
			if err := receiver.GroupAdd(ctx, tc.group, ch); err != nil {
				t.Fatal(err)
			}
			// A first send loads the scripts, so that the stalled one is
			// a single command that go-redis may send again.
			if _, err := sender.GroupSend(ctx, tc.group, layertest.Msg(t, "warm", 0)); err != nil {
				t.Fatal(err)
			}
			if d := in.Next(t); d.Type != "warm" {
				t.Fatalf("got %s, want warm", d.Data)
			}
			before := sendsRun(t, direct)

			proxy.Stall()
			msg := layertest.Msg(t, "once", 1)
			if tc.key != "" {
				msg = msg.WithKey(tc.key)
			}
			done := make(chan error, 1)
			go func() {
				_, err := sender.GroupSend(ctx, tc.group, msg)
				done <- err
			}()
			// Wait for the command and at least one retry to be held.
			waitUntil(t, "go-redis to send the command again", func() bool { return proxy.Held() >= 2 })
			held := proxy.Held()
			proxy.Release()
			err = <-done
			t.Logf("GroupSend after the stall: %v (%d copies held)", err, held)
			// Every copy the stall held reached Redis and ran.
			waitUntil(t, "Redis to run every held copy", func() bool {
				now := sendsRun(t, direct)
				return max(now.evalsha-before.evalsha, now.publish-before.publish) >= held
			})

			if _, err := sender.GroupSend(ctx, tc.group, layertest.Msg(t, "end", 2)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				d := in.Next(t)
				got = append(got, string(d.Data))
				if d.Type == "end" {
					break
				}
			}
			if len(got) != 2 {
				t.Fatalf("the member received %d frames, want the message once, then end: %q", len(got), got)
			}
		})
	}
}

var callsRE = regexp.MustCompile(`cmdstat_(evalsha|publish):calls=(\d+)`)

type runs struct{ evalsha, publish int }

// sendsRun returns how many EVALSHA and PUBLISH commands Redis has run.
// Each copy of a send runs one of them at the top, and publishes at most
// once, so the larger growth of the two counts the copies run, whether
// PUBLISH calls from scripts are counted or not.
func sendsRun(t *testing.T, c *redis.Client) runs {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var r runs
	for _, m := range callsRE.FindAllStringSubmatch(info, -1) {
		v, _ := strconv.Atoi(m[2])
		if m[1] == "evalsha" {
			r.evalsha = v
		} else {
			r.publish = v
		}
	}
	return r
}

// waitUntil polls cond until it holds, or fails the test.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(layertest.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}
