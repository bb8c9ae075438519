// Package channelsredis is a channellayer.Layer that speaks the wire
// format of channels_redis, the Redis channel layer of Django Channels,
// so that a Django project and Herald share one Redis: a group_send from
// Django reaches Herald's connections, a Herald group send reaches
// Django's consumers, and each side can send to the other's channel
// names. Both channels_redis layers are covered:
//
//   - Core speaks channels_redis.core.RedisChannelLayer. A group is the
//     sorted set <prefix>:group:<group> of channel names scored by join
//     time; each process has one inbox, the sorted set
//     <prefix>specific.<id>!, and a message in it is 12 random bytes and
//     a msgpack map whose "__asgi_channel__" names the target channels.
//     Herald's members are written to the group's sorted set and
//     refreshed while they live, so Django sees them as members and they
//     never age out; Close removes them.
//   - PubSub speaks channels_redis.pubsub.RedisPubSubChannelLayer: a
//     group is the Redis channel <prefix>__group__<group>, a channel name
//     is a Redis channel, and a message is a msgpack map.
//
// With SymmetricEncryptionKeys set, every message is a Fernet token under
// a key derived from each secret as channels_redis derives it; the first
// key encrypts and every key decrypts, which is how keys rotate.
//
// # Messages
//
// Messages cross between JSON (Herald) and msgpack (channels_redis) with
// their keys in order. Whole JSON numbers become msgpack integers; msgpack
// bytes, which JSON lacks, become base64 strings, and non-string map keys
// become their text. A message whose "type" is missing is dropped and
// logged, as is one that does not decode or decrypt.
//
// # Delivery
//
// As with channels_redis, delivery is at most once. Core: a send is
// queued in the receiving process's inbox unless it holds Capacity
// unread messages (ErrFull); unread messages expire after Expiry. A
// group send skips full inboxes, and fails with ErrFull only when every
// inbox was full. A send to a channel of a Django process cannot know
// whether that process is alive, so it succeeds while the inbox has
// room. PubSub: a message published while nobody subscribes is lost, and
// the send fails with channellayer.ErrNoReceivers.
//
// # Limits
//
// One Redis server: channels_redis's sharding over several hosts is not
// supported. Sends from Django to a channel name without '!' (a worker
// channel) reach no Herald connection.
//
// # Concurrency
//
// Layers are safe for concurrent use. Core runs two goroutines (the
// inbox reader and the membership refresher), PubSub one (the
// subscription reader); Close stops them. Readers never wait on a
// member: groups.Member.Deliver must not block.
package channelsredis
