package router_test

import "github.com/heraldhq/herald/consumer"

// newDemo returns the consumer of the demo route: it joins gossip and
// forwards name.gossip.
func newDemo() consumer.Constructor {
	ctor, err := consumer.NewForwarder(consumer.Forwarder{Join: []string{"gossip"}, Types: []string{"name.gossip"}})
	if err != nil {
		panic(err)
	}
	return ctor
}
