// Package groups keeps one instance's local group membership and fans
// messages out to the members that live in this process.
//
// A Registry maps channel names to Members and group names to sets of
// channel names. It knows nothing about WebSockets or Redis: a Member is
// anything with a non-blocking Deliver method, which a connection
// satisfies, and a channel layer uses a Registry to decide when it must
// subscribe to or unsubscribe from a group's traffic (the first local
// member joined, the last one left).
//
// # Delivery
//
// Deliver receives the message type and the encoded JSON object. The same
// byte slice is handed to every member of a group (encode once, write
// many), so members must treat it as read-only. Deliver runs on the
// sender's goroutine (for the Redis layer, the one goroutine that reads
// the subscription) and must never block: a member that cannot keep up
// drops itself, it does not stall the sender. Fan-out holds the
// registry's read lock while it calls Deliver, which keeps joins and
// leaves O(1) however large a group is; so Deliver must not call back
// into the registry.
//
// # Concurrency
//
// All methods are safe for concurrent use.
package groups
