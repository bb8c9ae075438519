// Package notifier turns rows inserted into Postgres tables into group
// sends on a channel layer, and stores the demo's posts (Store), which
// the demo application's HTTP handlers create and list. It speaks no
// HTTP and touches no connection; nothing in it imports the router.
//
// # Flow
//
// Migrate creates the posts table, the log (herald_log) and, on each
// bridged table, a deferred constraint trigger. When a transaction that
// inserted rows commits, the trigger takes a transaction-level advisory
// lock, copies each new row into the log under the next number of the
// log's sequence (seq), and notifies Channel ("herald_log") with an empty
// payload. The lock is held until the transaction ends, so no other
// transaction can number a row before this one has committed: seq order
// is commit order, and a reader that sees seq N sees every committed row
// below N. Updates, deletes and rolled-back inserts log nothing.
//
// A Bridge names a table, the group its rows go to and the shape of the
// message. The default, PostsBridge, sends each post to "gossip" as
//
//	{"type":"name.gossip","event":"New Post","sender":author,"message":message,"id":id}
//
// built by GossipMessage; other bridges send {"type": Type, field: column
// value, ...}. ParseBridges reads bridges from a setting.
//
// Every Herald instance runs one Listener. It keeps its own connection,
// outside the pool, LISTENs on Channel, and on each notification (and
// every PollInterval in any case) reads the log after the last seq it
// delivered, a page of 500 rows at a time, and sends each row to its
// bridge's group. A notification is only a doorbell: its payload is
// ignored, so its size limit, its folding of repeats and NOTIFYs sent by
// others do not matter, and rows of any size arrive whole. The notifier
// never touches a client connection; the layer does the rest.
//
// # Delivery
//
// Every instance reads every row. On a layer that can send once
// (Layer.GroupSendOnce: the memory, Redis and Redis Cluster layers),
// every Listener offers every row and the layer sends the first offer to
// the group's members on every instance, with a history id where the
// group keeps history. On a layer that cannot (its GroupSendOnce answers
// channellayer.ErrUnsupported: the channels_redis layers), each Listener
// delivers to its own instance's members (Layer.GroupSendLocal). Either
// way a client gets each row of a bridged table once, in commit order,
// including rows committed while a Listener was away.
//
// A group with no member is not an error. A row a bridge cannot encode,
// and a send that fails for any reason but an unreachable or closed
// layer, is logged and not retried; a closed layer ends the session, and
// the row is offered again rather than recorded as sent. Clients that miss a row (offline, slow, or
// behind a failed send) can read it from its table, as with Store.Recent.
//
// # Pacing
//
// Config.Pace, when set, is called before each row is sent and waited
// for; it returns when the receivers can take more. A burst in the log
// (thousands of rows in one transaction) is then delivered as fast as the
// members take it, rather than overrunning their queues: the log is
// durable, so the rows can wait.
//
// # Outages
//
// When its connection fails, Run logs it and reconnects with jittered
// exponential backoff; Postgres may also be down when Run starts. Once
// listening again it first delivers the rows logged meanwhile, then goes
// on live. Ready is false from the failure until that catch-up is done. A
// fresh Listener starts at the end of the log and delivers nothing older.
//
// When a layer that can send once cannot be reached (a send fails with
// channellayer.ErrUnavailable), the Listener holds: it offers the same
// row again with jittered exponential backoff (from MinBackoff, at most
// 5 seconds apart), once the layer answers its probe (channellayer.Layer.Check,
// which on Redis includes this instance's subscription), and delivers
// nothing after it, while it keeps reading its connection. Once the layer takes the row, the rows held meanwhile
// follow in commit order, each once and with its history id. No client
// gets a row without the id it can resume from, so a client that
// reconnects during or after the outage resumes the held rows from the
// group's history. Ready is false while the Listener holds. Commit order
// is kept across bridges, so one held row holds the rows of every bridge
// behind it (on Redis Cluster, a group whose master is down holds the
// others too, until its replica takes over).
//
// Rows stay in the log for Retention (default 24 hours); every Listener
// prunes older rows it has delivered. A Listener away longer than that
// logs an error and skips what was pruned.
//
// # Deployment
//
// LISTEN needs a session that lasts as long as the Listener. Point the
// pool's connection string at Postgres itself, or at a PgBouncer pool in
// session mode: in transaction mode the LISTEN is lost as soon as the
// statement ends (the Listener still polls, so rows arrive late rather
// than never). Writers may go through any pooling mode. The Listener
// connects with the pool's settings (but not its BeforeConnect or
// AfterConnect hooks) and names its session herald-notifier in
// pg_stat_activity unless the connection string sets application_name.
//
// Committing transactions that insert into bridged tables take turns on
// one advisory lock, from their commit-time trigger to the end of the
// commit; NOTIFY already serializes notifying commits in much the same
// way. Roles that insert into bridged tables need INSERT on herald_log and
// USAGE on its sequence.
//
// # Stores
//
// PostgresStore inserts rows and leaves delivery to the trigger and the
// Listeners. MemoryStore, for a Herald without Postgres, keeps the newest
// MaxRecent posts in memory and delivers each one itself with GroupSend;
// a post the layer cannot take waits, in order, in an outbox that its Run
// delivers once the layer is back. Its post ids start from the time the
// store was made, so a restart does not repeat them. Both validate with
// ValidatePost, and a stored post is never an error: Create reports
// whether it was delivered yet (Created.Delivery).
//
// A Create with an idempotency key (NewPost.IdempotencyKey) is applied
// once: a retry with the same key within IdempotencyLifetime (24 hours)
// returns the first result, and the same key for another post fails with
// ErrIdempotencyKeyReused. PostgresStore records the key in
// herald_idempotency in the post's own transaction, so a retry on any
// instance finds it; the Listeners prune keys older than a day.
// MemoryStore remembers the last 10,000 keys of its process.
//
// # Concurrency
//
// Stores are safe for concurrent use. A Listener's Run is called by one
// goroutine at a time, which owns it until ctx is done; Ready may be
// called from any goroutine.
package notifier
