package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// TestTokensAgainstRunningServer checks the token settings end to end on
// a real process: what an attacker without a good token gets, and what a
// client with one may do.
func TestTokensAgainstRunningServer(t *testing.T) {
	t.Parallel()
	secret := "a-secret-of-at-least-thirty-two-bytes!"
	in := startHerald(t, "HERALD_JWT_SECRET="+secret)
	sign := func(key string, exp time.Duration) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "u1", "groups": []string{"user.u1"}, "exp": time.Now().Add(exp).Unix(),
		}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	dial := func(query string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, "ws://"+in.addr+"/notifications/"+query, nil)
		if c != nil {
			t.Cleanup(func() { c.CloseNow() })
		}
		return c, resp, err
	}
	for name, q := range map[string]string{
		"no token": "",
		"forged":   "?token=" + sign("another-secret-of-thirty-two-bytes!!", time.Hour),
		"expired":  "?token=" + sign(secret, -time.Hour),
	} {
		if _, resp, err := dial(q); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
	c, _, err := dial("?token=" + sign(secret, time.Hour))
	if err != nil {
		t.Fatalf("good token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for group, want := range map[string]string{"user.u1": "subscribed", "user.u2": "error"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","group":"`+group+`"}`)); err != nil {
			t.Fatal(err)
		}
		_, data, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(data, &m)
		if m["type"] != want || m["group"] != group {
			t.Errorf("subscribe %s: %s, want %s", group, data, want)
		}
	}
	// The allowed group receives what the API sends it.
	if st := in.post(t, "/api/groups/user.u1/send", `{"type":"name.gossip","private":true}`); st != http.StatusAccepted {
		t.Fatalf("send to user.u1: %d", st)
	}
	_, data, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(data), `"private":true`) {
		t.Fatalf("got %s %v", data, err)
	}
}
