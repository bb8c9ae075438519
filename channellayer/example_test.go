package channellayer_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/groups"
)

// A group send reaches every member; the members share one encoding of
// the message. The result says what happened.
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
	res, err := layer.GroupSend(ctx, "team.7", msg)
	if err != nil {
		panic(err)
	}
	fmt.Println("delivered:", res.Delivered, "kept:", res.Kept())
	// Nobody is in "empty", and it keeps no history: the send says so
	// rather than pretending.
	_, err = layer.GroupSend(ctx, "empty", msg)
	fmt.Println(errors.Is(err, channellayer.ErrNoReceivers))
	// Output:
	// ana got name.gossip {"message":"hello","type":"name.gossip"}
	// ben got name.gossip {"message":"hello","type":"name.gossip"}
	// delivered: true kept: false
	// true
}

// A group with history gives each message an id, returned by the send
// and delivered as one extra field, and can replay what followed an id
// to a member that missed it. A message sent while the group has no
// member is kept, not lost; a group without history says so.
func ExampleLayer_History() {
	ctx := context.Background()
	layer, err := channellayer.NewMemoryWith(channellayer.MemoryConfig{
		History: []channellayer.HistoryPolicy{{Pattern: "orders.*", Size: 100}},
	})
	if err != nil {
		panic(err)
	}
	defer layer.Close()
	var ids []string
	for i := range 3 {
		msg, _ := channellayer.NewMessage(map[string]any{"type": "order.update", "n": i})
		res, err := layer.GroupSend(ctx, "orders.7", msg)
		if err != nil {
			panic(err)
		}
		fmt.Println("delivered:", res.Delivered, "kept:", res.Kept())
		ids = append(ids, res.ID)
	}
	missed, err := layer.History(ctx, "orders.7", ids[0], 100)
	fmt.Println(len(missed), err, missed[1].ID() == ids[2])
	_, err = layer.History(ctx, "team.7", "0-0", 100)
	fmt.Println(errors.Is(err, channellayer.ErrNoHistory))
	// Output:
	// delivered: false kept: true
	// delivered: false kept: true
	// delivered: false kept: true
	// 2 <nil> true
	// true
}
