package consumer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/groups"
)

// TestInstanceGroupLimit: when the layer holds as many groups as it may,
// a client whose default group, "groups" query group or subscribe would
// create another is told so by an error frame naming the group, and stays
// connected; groups the layer holds can still be joined.
func TestInstanceGroupLimit(t *testing.T) {
	layer, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{MaxGroups: 2})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, newDemo("team"), func(s *consumer.Server) {
		s.Layer = layer
		s.PublicGroups = []string{"team", "held", "other"}
	})
	t.Cleanup(func() { _ = layer.Close() })
	filler, err := layer.NewChannel(groups.MemberFunc(func(string, []byte) {}))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"held", "filler"} {
		if err := layer.GroupAdd(context.Background(), g, filler); err != nil {
			t.Fatal(err)
		}
	}
	c := h.dial("groups=held,other")
	for _, g := range []string{"team", "other"} {
		got := read(t, c)
		if !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, `"group":"`+g+`"`) || !strings.Contains(got, "limit") {
			t.Fatalf("joining %s past the limit: %s, want an error frame naming it", g, got)
		}
	}
	write(t, c, websocket.MessageText, `{"type":"subscribe","group":"other"}`)
	if got := read(t, c); !strings.Contains(got, `"type":"error"`) || !strings.Contains(got, `"group":"other"`) {
		t.Fatalf("subscribe past the limit: %s", got)
	}
	// Still connected, and in the group the layer held.
	msg, err := channellayer.NewMessage(map[string]any{"type": demoType, "message": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := layer.GroupSend(context.Background(), "held", msg); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); !strings.Contains(got, `"message":"hi"`) {
		t.Fatalf("member of held got %s", got)
	}
}
