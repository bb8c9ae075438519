package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// send writes one frame to the server.
func (c *client) send(frame string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// TestChannelNamesNotGuessable: a client learns its own channel name
// from whoami; the names of the other connections on the instance, which
// /api/channels/{name}/send would deliver to, cannot be built from it.
// Names used to be <instance>!<base-36 counter>: the neighbours of
// <instance>!5 were <instance>!4 and <instance>!6.
func TestChannelNamesNotGuessable(t *testing.T) {
	t.Parallel()
	in := startHerald(t)
	in.waitReady(t)
	var clients []*client
	var names []string
	for range 5 {
		c := dialNotifications(t, in.addr)
		clients = append(clients, c)
		names = append(names, c.whoami())
	}
	mine := names[2]
	instance, local, ok := strings.Cut(mine, "!")
	if !ok {
		t.Fatalf("channel name %q has no '!'", mine)
	}
	// Every neighbour built the old way from one's own name: nothing.
	for k := range uint64(64) {
		guess := instance + "!" + strconv.FormatUint(k, 36)
		resp, err := http.Post("http://"+in.addr+"/api/channels/"+guess+"/send", "application/json", strings.NewReader(`{"type":"name.gossip","message":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if st := resp.StatusCode; st != http.StatusNotFound {
			t.Fatalf("send to the guessed channel %q: %d, want 404", guess, st)
		}
	}
	raw, err := hex.DecodeString(local)
	if err != nil || len(raw)*8 < 64 {
		t.Fatalf("the part of %q after '!' is not hex of at least 64 bits: %d bytes, %v", mine, len(raw), err)
	}
	for _, other := range names {
		if other == mine {
			continue
		}
		inst2, local2, _ := strings.Cut(other, "!")
		raw2, err := hex.DecodeString(local2)
		if inst2 != instance || err != nil || len(raw2) != len(raw) {
			t.Fatalf("names %q and %q differ in form", mine, other)
		}
		differ := 0
		for i := range raw {
			differ += bits.OnesCount8(raw[i] ^ raw2[i])
		}
		// Independent random halves differ in about half their bits.
		if differ < len(raw)*8/4 {
			t.Errorf("names %q and %q differ in only %d of %d bits", mine, other, differ, len(raw)*8)
		}
	}
	// The real name still works.
	if st := in.post(t, "/api/channels/"+names[3]+"/send", `{"type":"name.gossip","message":"to you"}`); st != http.StatusAccepted {
		t.Fatalf("send to a real channel: %d, want 202", st)
	}
	if m := clients[3].next(); m["message"] != "to you" {
		t.Fatalf("the real channel got %v", m)
	}
}

// TestInstanceGroupCap: with HERALD_MAX_INSTANCE_GROUPS=3, the instance
// holds at most three distinct groups: a subscribe that would make a
// fourth is refused with an error frame naming the group, while joining
// a group the instance holds already, and API sends to any group, are
// not affected; a group left empty frees its place.
func TestInstanceGroupCap(t *testing.T) {
	t.Parallel()
	in := startHerald(t, "HERALD_MAX_INSTANCE_GROUPS=3", "HERALD_PUBLIC_GROUPS=gossip,room.*", "HERALD_HISTORY=gossip:1000:1h,room.*:10:1h")
	in.waitReady(t)
	a := dialNotifications(t, in.addr) // in gossip: the first group
	a.whoami()
	subscribe := func(c *client, group string) map[string]any {
		t.Helper()
		c.send(`{"type":"subscribe","group":"` + group + `"}`)
		return c.next()
	}
	for _, g := range []string{"room.1", "room.2"} {
		if m := subscribe(a, g); m["type"] != "subscribed" {
			t.Fatalf("subscribe %s: %v", g, m)
		}
	}
	m := subscribe(a, "room.3")
	if m["type"] != "error" || m["group"] != "room.3" || !strings.Contains(fmt.Sprint(m["error"]), "limit") {
		t.Fatalf("subscribe to a 4th group: %v, want an error frame naming room.3 and the limit", m)
	}
	t.Logf("refused: %v", m["error"])
	// A resync follows for a group refused with a position; none here.
	b := dialNotifications(t, in.addr) // joins gossip, which exists
	b.whoami()
	if m := subscribe(b, "room.1"); m["type"] != "subscribed" {
		t.Fatalf("subscribe to a group the instance holds: %v", m)
	}
	if m := subscribe(b, "room.4"); m["type"] != "error" || m["group"] != "room.4" {
		t.Fatalf("second client, 4th group: %v, want an error frame", m)
	}
	// Sends do not make local groups: any number of them is taken.
	for i := range 20 {
		st, body := in.postBody(t, fmt.Sprintf("/api/groups/room.x%d/send", i), `{"type":"name.gossip","message":"kept"}`)
		if st != http.StatusAccepted {
			t.Fatalf("API send to a group beyond the cap: %d %s", st, body)
		}
	}
	if st := in.post(t, "/api/groups/room.1/send", `{"type":"name.gossip","message":"to room.1"}`); st != http.StatusAccepted {
		t.Fatalf("API send to a held group: %d", st)
	}
	for _, c := range []*client{a, b} {
		if m := c.next(); m["message"] != "to room.1" {
			t.Fatalf("member of room.1 got %v", m)
		}
	}
	// room.2 emptied: its place is free for room.3.
	a.send(`{"type":"unsubscribe","group":"room.2"}`)
	if m := a.next(); m["type"] != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", m)
	}
	deadline := time.Now().Add(wait)
	for {
		m := subscribe(a, "room.3")
		if m["type"] == "subscribed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribe after a group was left: %v", m)
		}
	}
}

// TestMemoryHistoryBoundAndExpiry is the report that started the bound:
// sends to many new groups with HERALD_HISTORY=room.*:100:<age>. The
// histories never hold more than HERALD_HISTORY_MAX_BYTES, the oldest
// messages going first, and once the age has passed with no more sends
// they hold nothing at all.
func TestMemoryHistoryBoundAndExpiry(t *testing.T) {
	t.Parallel()
	const maxBytes = 64 << 10
	in := startHerald(t, "HERALD_PUBLIC_GROUPS=gossip,room.*", "HERALD_HISTORY=gossip:1000:1h,room.*:100:500ms", "HERALD_HISTORY_MAX_BYTES="+strconv.Itoa(maxBytes))
	in.waitReady(t)
	pad := strings.Repeat("x", 500)
	for i := range 300 {
		if st := in.post(t, fmt.Sprintf("/api/groups/room.%d/send", i), `{"type":"name.gossip","message":"`+pad+`"}`); st != http.StatusAccepted {
			t.Fatalf("send %d: %d", i, st)
		}
	}
	if b, bound := metric(t, in, "herald_history_bytes"), metric(t, in, "herald_history_max_bytes"); bound != maxBytes || b <= 0 || b > maxBytes {
		t.Fatalf("histories hold %v bytes, bound %v; want within %d", b, bound, maxBytes)
	}
	if n := metric(t, in, `herald_history_dropped_total{reason="space"}`); n == 0 {
		t.Fatal("no message dropped for space")
	}
	// A client resuming room.0 from before its dropped message resyncs.
	c := dialNotificationsQuery(t, in.addr, "groups=room.0&since=room.0:1-0")
	if m := c.next(); m["type"] != "resync" || m["group"] != "room.0" {
		t.Fatalf("resume from a dropped position: %v, want a resync of room.0", m)
	}
	deadline := time.Now().Add(wait)
	for metric(t, in, "herald_history_groups") != 0 || metric(t, in, "herald_history_bytes") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("histories still hold %v groups, %v bytes, with every message older than the age",
				metric(t, in, "herald_history_groups"), metric(t, in, "herald_history_bytes"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := metric(t, in, `herald_history_dropped_total{reason="age"}`); n == 0 {
		t.Fatal("no message counted as expired")
	}
}

func dialNotificationsQuery(t *testing.T, addr, query string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/notifications/?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return &client{t: t, conn: c}
}
