// Package notifier turns rows inserted into the Postgres table posts into
// group sends on a channel layer, and stores the posts that the HTTP API
// creates.
//
// # Flow
//
// Migrate installs the posts table and an AFTER INSERT trigger that calls
// pg_notify on Channel ("herald_posts") for each new row, when its
// transaction commits. The payload is the row as JSON, or only {"id":N}
// when the row would not fit (Postgres refuses payloads of 8000 bytes or
// more), in which case the Listener reads the row by id: posts of any size
// arrive whole. Updates, deletes and rolled-back inserts send nothing.
//
// Every Herald instance runs one Listener. It keeps its own connection,
// outside the pool, LISTENs on Channel and sends each post to its group
// (default "gossip") as
//
//	{"type":"name.gossip","event":"New Post","sender":author,"message":message,"id":id}
//
// built by GossipMessage. The notifier never touches a client connection;
// the layer does the rest.
//
// # Delivery
//
// Every instance receives every notification, so a Listener delivers only
// to its own instance's members, with GroupSendLocal when the layer
// implements channellayer.LocalSender (both Herald layers do). A client
// connected to any instance then gets each post once, from the Listener of
// its own instance, including posts that Listener catches up after an
// outage (but see the known gap below). With a layer that cannot send locally
// the Listener falls back to GroupSend, which reaches every instance; run
// a single Listener per shared layer then.
//
// Live posts arrive in the order their transactions commit, which is not
// always id order. A group with no member is not an error; any other send
// error is logged and the post is not retried. Clients that miss a post
// (offline, slow, or behind a failed send) can read it with Store.Recent.
//
// # Outages
//
// When its connection fails, Run logs it and reconnects with jittered
// exponential backoff. Once listening again it delivers, in id order and
// 500 at a time, the posts with ids above the last one it delivered, and
// only then the notifications that follow; those repeating a post the
// catch-up already delivered are dropped. Ready is false from the failure
// until the catch-up is done. A fresh Listener starts from the newest post
// in the table and delivers nothing older.
//
// Known gap: a post gets its id at insert and becomes visible at commit.
// A post that commits while the Listener is away, with an id below one it
// already delivered, is not caught up; nor is one whose id falls inside a
// catch-up and which commits just after its page was read, as its
// notification is taken for a repeat. Both need a transaction that stays
// open across an outage or a catch-up; closing the gap is left for later.
//
// # Deployment
//
// LISTEN needs a session that lasts as long as the Listener. Point the
// pool's connection string at Postgres itself, or at a PgBouncer pool in
// session mode: in transaction mode the LISTEN is lost as soon as the
// statement ends and no notification ever arrives. The Listener connects
// with the pool's settings (but not its BeforeConnect or AfterConnect
// hooks) and names its session herald-notifier in pg_stat_activity unless
// the connection string sets application_name. Each instance holds one
// such connection. Every commit that notifies takes a lock global to the
// server, so posts commit one at a time.
//
// # Stores
//
// PostgresStore inserts rows and leaves delivery to the trigger and the
// Listeners. MemoryStore, for a Herald without Postgres, keeps the newest
// MaxRecent posts in memory and delivers each one itself with GroupSend.
// Both validate with ValidatePost.
//
// # Concurrency
//
// Stores are safe for concurrent use. A Listener's Run is called by one
// goroutine at a time, which owns it until ctx is done; Ready may be
// called from any goroutine.
package notifier
