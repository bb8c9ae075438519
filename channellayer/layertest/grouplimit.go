package layertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// GroupLimit checks a layer configured to hold at most max distinct
// groups (its MaxGroups setting): max groups are joined; a GroupAdd that
// would make one more fails with groups.ErrGroupLimit naming the group,
// while joining a group the layer holds still works; a send to a group
// beyond the cap is an ordinary send to a group with no member; leaving
// a group frees its place. The caller closes l.
func GroupLimit(t *testing.T, l channellayer.Layer, max int) {
	t.Helper()
	a, b := NewInbox(4), NewInbox(4)
	ca, err := l.NewChannel(a)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := l.NewChannel(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range max {
		if err := l.GroupAdd(ctx(t), fmt.Sprintf("cap.%d", i), ca); err != nil {
			t.Fatalf("join of group %d of %d: %v", i+1, max, err)
		}
	}
	err = l.GroupAdd(ctx(t), "cap.over", ca)
	if !errors.Is(err, groups.ErrGroupLimit) || !strings.Contains(err.Error(), `"cap.over"`) {
		t.Fatalf("join of one group too many: %v, want groups.ErrGroupLimit naming cap.over", err)
	}
	if err := l.GroupAdd(ctx(t), "cap.0", cb); err != nil {
		t.Fatalf("join of a group the layer holds: %v", err)
	}
	if _, err := l.GroupSend(ctx(t), "cap.over", Msg(t, "t.o", 0)); !errors.Is(err, channellayer.ErrNoReceivers) {
		t.Fatalf("send to a group beyond the cap: %v, want ErrNoReceivers", err)
	}
	if _, err := l.GroupSend(ctx(t), "cap.0", Msg(t, "t.o", 1)); err != nil {
		t.Fatal(err)
	}
	expect(t, a, "t.o", 1)
	expect(t, b, "t.o", 1)
	if err := l.GroupDiscard(ctx(t), fmt.Sprintf("cap.%d", max-1), ca); err != nil {
		t.Fatal(err)
	}
	if err := l.GroupAdd(ctx(t), "cap.over", cb); err != nil {
		t.Fatalf("join after a group was left: %v", err)
	}
	if _, err := l.GroupSend(ctx(t), "cap.over", Msg(t, "t.o", 2)); err != nil {
		t.Fatal(err)
	}
	expect(t, b, "t.o", 2)
	a.Empty(t)
}
