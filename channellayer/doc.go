// Package channellayer carries messages between the consumers of every
// Herald instance: send to one channel, add a channel to a group, send to
// a group. It knows nothing of WebSockets, HTTP or Postgres; anything that
// publishes (the HTTP API, the notifier, a Go service) talks to a Layer.
//
// # Names
//
// Group and channel names follow Django Channels: ASCII letters, digits,
// '-', '_' and '.', shorter than MaxNameLength (100) bytes. Channel names
// made by NewChannel also hold one '!' that separates the part naming the
// instance from the part naming the connection, which is LocalName: 128
// random bits, so that no name can be guessed from another. A bad name
// is an error wrapping ErrInvalidName, never a silent drop.
//
// # Messages
//
// A Message is a JSON object with a non-empty string "type", kept encoded:
// it is encoded once where it is published and the same bytes are handed
// to every local member (see package groups).
//
// # One contract
//
// Layer is the whole contract, and every implementation has every
// method: a layer without a capability says so through the method itself,
// so a wrapper (such as the metrics' instrumented layer) that embeds a
// Layer hides nothing and callers never look for optional interfaces.
//
//   - History: a group that keeps no history (its HistoryPolicy keeps
//     none, or the layer keeps none at all) answers an error wrapping
//     ErrNoHistory, at once, without touching the backing service.
//   - GroupSendOnce and LastSent: a layer that cannot send once answers
//     an error wrapping ErrUnsupported, whatever the arguments; the
//     notifier then sends each row locally on every instance.
//   - KeyWindow: zero for a layer that does not apply idempotency keys;
//     every send is then delivered.
//   - GroupSendLocal, Check and Stats: every layer has them.
//
// A group send returns a SendResult: the history id the message got
// (Kept), and whether it reached a member (Delivered). A message that
// reached nobody and was not kept went nowhere, and only then is the
// error ErrNoReceivers; a message kept in a history with no member now is
// no error (the HTTP API answers it "kept").
//
// Adding a layer means implementing Layer and running layertest.Run.
//
// # Implementations
//
// Memory serves one process and needs no service. Redis shares groups and
// channels between every instance on one Redis: an instance subscribes to
// a group's Redis channel only while it has a local member, and a group
// send is one PUBLISH. RedisCluster does the same on a Redis Cluster with
// sharded pub/sub (SSUBSCRIBE, SPUBLISH): a group's traffic flows only
// through the master that owns its slot, so masters added share the load.
// The two layers of package channelsredis speak Django Channels'
// channels_redis format; they keep no history and cannot send once. All
// pass the conformance suite in layertest.
//
// # One Redis or a cluster
//
// One Redis is simpler and enough for most deployments: every published
// message costs it one PUBLISH plus one write per subscribed instance,
// on one core. Move to a cluster when that core nears saturation (Redis'
// CPU near 100%, or client-output-buffer pressure on subscribers), or
// when one node cannot carry the message rate of every group at once.
// Plain PUBLISH on a cluster would not help: it is broadcast to every
// node. Sharded pub/sub is what spreads groups over masters. A single
// very busy group still lives on one master; a cluster spreads many
// groups, not one. See docs/SCALING.md.
//
// # Faults
//
// The Redis layers connect and reconnect on their own; NewRedis and
// NewRedisCluster need no reachable Redis. While Redis is down, sends fail
// with an error wrapping ErrUnavailable, GroupAdd records the membership
// and returns such an error at once, and Check reports not ready. When
// Redis returns, every group with local members is subscribed again
// within RedisConfig.MaxBackoff (1s by default). A subscription
// connection that stays silent is pinged after RedisConfig.HealthInterval
// (1s) and given up when no answer comes within RedisConfig.HealthTimeout
// (2s), so a node that stops answering without closing anything (a
// frozen or paused master, a dead path) is noticed within 3s; on a
// cluster the layer then reads the slot map from every node it knows at
// once and follows the groups to the replica that took over, recovering
// groups with history from their positions. Messages arriving on a
// connection for a group it no longer carries (an old master running
// what was queued on it before it steps down) are dropped. Check answers
// within a second, whatever the state of the nodes. Membership changes
// never wait on a dial while holding the layer's lock. Stats counts
// reconnects and errors for metrics.
//
// # Delivery
//
// Within one layer, messages from one sender to one receiver keep their
// order. For groups without history delivery is at most once: a Redis
// outage loses the messages published while it lasts, and sends made
// meanwhile fail with an error wrapping ErrUnavailable.
//
// For groups with history, each instance keeps a recovery position per
// subscribed group: the last id it delivered, or, until it has delivered
// one, the moment the group's subscription was asked for (less one
// second of clock slack, as a stream id). After any lost subscription (a
// dropped connection, a Redis restart, a slot move or a failover) the
// group is recovered from that position before any later message, so
// members get what they missed once and in order, whether or not they
// had received anything before. When the history cannot cover the gap
// (trimmed, or gone with a Redis that restarted without persistence),
// members get a ResyncType message naming the group, and then every
// message the history holds after the position: what was accepted once
// Redis was back is delivered after the resync, not dropped by it.
//
// A send that reaches nobody, and is not kept in a history, returns an
// error wrapping ErrNoReceivers, so a caller can tell "sent" and "kept"
// (SendResult) from "went nowhere".
//
// A send is applied at most once. Every layer of this package applies
// idempotency keys (Layer.KeyWindow): a
// message carrying an idempotency key (Message.WithKey) is applied once
// per key and destination for KeyWindow (a day), so a publisher that
// retries a request it got no answer to, through any instance, delivers
// nothing twice, and the retry reports what the first attempt did. On
// Redis the record is written by the same script that publishes; a send
// without a key gets a key of its own, kept a minute, so that the Redis
// client's retries of one call after a read timeout (a stalled Redis or
// network) do not publish it again.
//
// The layer hands each message to a member's Deliver, which must not
// block; a member too slow to keep up must drop itself (package consumer
// disconnects it) rather than hold up the layer.
package channellayer
