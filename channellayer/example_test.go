package channellayer_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// A group send reaches every member; the members share one encoding of
// the message.
func ExampleLayer_groupSend() {
	ctx := context.Background()
	var layer channellayer.Layer = channellayer.NewMemory()
	defer layer.Close()

	for _, who := range []string{"ana", "ben"} {
		ch, _ := layer.NewChannel(groups.MemberFunc(func(msgType string, data []byte) {
			fmt.Printf("%s got %s %s\n", who, msgType, data)
		}))
		_ = layer.GroupAdd(ctx, "team.7", ch)
	}

	msg, err := channellayer.NewMessage(map[string]any{"type": "name.gossip", "message": "hello"})
	if err != nil {
		panic(err)
	}
	if err := layer.GroupSend(ctx, "team.7", msg); err != nil {
		panic(err)
	}
	// Nobody is in "empty": the send says so rather than pretending.
	err = layer.GroupSend(ctx, "empty", msg)
	fmt.Println(errors.Is(err, channellayer.ErrNoReceivers))
	// Output:
	// ana got name.gossip {"message":"hello","type":"name.gossip"}
	// ben got name.gossip {"message":"hello","type":"name.gossip"}
	// true
}

// A group with history gives each message an id, delivered as one extra
// field, and can replay what followed an id to a member that missed it.
func ExampleHistorian() {
	ctx := context.Background()
	layer, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{
		History: []channellayer.HistoryPolicy{{Pattern: "orders.*", Size: 100}},
	})
	if err != nil {
		panic(err)
	}
	defer layer.Close()
	var ids []string
	ch, _ := layer.NewChannel(groups.MemberFunc(func(string, []byte) {}))
	_ = layer.GroupAdd(ctx, "orders.7", ch)
	for i := range 3 {
		msg, _ := channellayer.NewMessage(map[string]any{"type": "order.update", "n": i})
		_ = layer.GroupSend(ctx, "orders.7", msg)
		all, _ := layer.History(ctx, "orders.7", "0-0", 100)
		ids = append(ids, all[len(all)-1].ID())
	}
	missed, err := layer.History(ctx, "orders.7", ids[0], 100)
	fmt.Println(len(missed), err, missed[1].ID() == ids[2])
	// Output:
	// 2 <nil> true
}
