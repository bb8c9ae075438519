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
		_ = layer.GroupAdd(ctx, "gossip", ch)
	}

	msg, err := channellayer.NewMessage(map[string]any{"type": "name.gossip", "message": "hello"})
	if err != nil {
		panic(err)
	}
	if err := layer.GroupSend(ctx, "gossip", msg); err != nil {
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
