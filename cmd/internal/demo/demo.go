// Package demo is the application Herald serves out of the box: the page
// in web/ shows posts as they are made. Its browsers connect to Path,
// join Group and are sent the messages of Type, and Posts serves the
// posts they make over HTTP; everything else in the server is
// configuration of the framework packages, which know nothing of it.
package demo

import "github.com/heraldhq/herald/consumer"

const (
	// Path is the route the demo page connects to.
	Path = "/notifications/"
	// Group is the group its browsers join at connect, and the one posts
	// are sent to.
	Group = "gossip"
	// Type is the message type of a post, the one type the demo route
	// forwards.
	Type = "name.gossip"
)

// Forwarder returns the consumer configuration of the demo route.
func Forwarder() consumer.Forwarder {
	return consumer.Forwarder{Join: []string{Group}, Types: []string{Type}}
}
