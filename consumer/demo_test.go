package consumer_test

import "github.com/heraldhq/herald/consumer"

// demoType is the one type the demo route forwards.
const demoType = "name.gossip"

// newDemo returns the consumer of the demo route: it joins group
// ("gossip" if empty) and forwards demoType.
func newDemo(group string) consumer.Constructor {
	if group == "" {
		group = "gossip"
	}
	ctor, err := consumer.NewForwarder(consumer.Forwarder{Join: []string{group}, Types: []string{demoType}})
	if err != nil {
		panic(err)
	}
	return ctor
}
