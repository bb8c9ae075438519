package consumer_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/groups"
)

// memberSpy is a memory layer that hands the test each member it
// registers, so the test can deliver to it as a layer would.
type memberSpy struct {
	*channellayer.Memory
	members chan groups.Member
}

func (l memberSpy) NewChannel(m groups.Member) (string, error) {
	l.members <- m
	return l.Memory.NewChannel(m)
}

// TestResumeDropsLateCopies delivers, after a resume, copies of messages
// the client already has: the one it resumed from and the replayed ones.
// On Redis that happens when messages published just before a new member
// joined are still on their way to the instance. The client must not see
// them twice.
func TestResumeDropsLateCopies(t *testing.T) {
	for _, sse := range []bool{false, true} {
		mem, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{
			History: []channellayer.HistoryPolicy{{Pattern: "gossip", Size: 100}},
		})
		if err != nil {
			t.Fatal(err)
		}
		layer := memberSpy{mem, make(chan groups.Member, 1)}
		srv := &consumer.Server{Layer: layer, PublicGroups: []string{"gossip"}}
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			srv.Serve(w, r, consumer.Route{Pattern: "/notifications/", New: newDemo("")})
		}))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_ = srv.Shutdown(ctx)
			hs.Close()
			_ = mem.Close()
		})

		// Four messages kept while nobody listens; their ids are what a
		// history read returns.
		for i := range 4 {
			_, err := mem.GroupSend(t.Context(), "gossip", gossip(t, i))
			if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
				t.Fatal(err)
			}
		}
		kept, err := mem.History(t.Context(), "gossip", "0-0", 100)
		if err != nil || len(kept) != 4 {
			t.Fatalf("history: %d messages, %v", len(kept), err)
		}

		ctx, cancel := context.WithTimeout(t.Context(), wait)
		defer cancel()
		dial := dialWS
		if sse {
			dial = dialSSE
		}
		s, err := dial(ctx, hs.URL, kept[1].ID()) // has 0 and 1
		if err != nil {
			t.Fatal(err)
		}
		defer s.kill()
		member := (<-layer.members).(groups.HistoryMember)
		for _, want := range []int{2, 3} {
			if f, _, err := s.next(ctx); err != nil || f["n"] != float64(want) {
				t.Fatalf("sse %v: replayed frame %v (%v), want n=%d", sse, f, err, want)
			}
		}
		// Late copies of what the client has, then a new message.
		for _, m := range kept[1:] {
			member.DeliverFrom("gossip", m.ID(), m.Type(), m.Bytes())
		}
		if _, err := mem.GroupSend(t.Context(), "gossip", gossip(t, 4)); err != nil {
			t.Fatal(err)
		}
		if f, _, err := s.next(ctx); err != nil || f["n"] != float64(4) {
			t.Fatalf("sse %v: after the late copies got %v (%v), want the new message n=4", sse, f, err)
		}
	}
}
