// Package consumer runs WebSocket connections the way Django Channels
// runs consumers: each connection gets a Consumer and its own channel on
// the channel layer, so a backend can send to exactly that connection,
// and it may join groups.
//
// # Lifecycle
//
// Server.Serve registers the channel, calls Consumer.Connect (accept,
// reject before the upgrade with an HTTP status, or accept and close with
// a code), then calls Receive for each client frame and Dispatch for each
// layer message, and finally Disconnect exactly once, whatever ended the
// connection. The channel is removed from the layer, and so from every
// group, when the connection ends.
//
// # Goroutines and the outbound queue
//
// A WebSocket has one goroutine of its own while it is idle, its reader,
// which calls Receive; Serve returns after the upgrade and the Server owns
// that goroutine (Shutdown waits for it). An event stream is served by
// its HTTP handler. A writer goroutine runs only while there is something
// to write: it calls Dispatch and writes frames, and nothing else writes
// to the socket but coder/websocket's own control frames. Keep-alive pings
// are driven by a timer, not a goroutine. Layer messages and frames wait
// in one queue bounded in bytes (Server.QueueBytes, default 1 MiB): the
// payloads queued and those the writer has taken but not yet written,
// plus a small fixed cost per message. The layer's Deliver and Conn.Send
// never block. A client is too slow when its queue would pass the bound,
// or when a write to it does not complete within Server.WriteTimeout: it
// is closed (StatusTooSlow, 4008, for the queue), counted in Stats, and
// nobody else waits for it. A burst that the client drains in time is
// never a reason to close it. A resuming client's replay is bounded by
// Server.MaxReplay and Server.MaxReplayBytes (at most half of
// QueueBytes) instead, and is not counted; how often one client address
// may ask for a replay is bounded by Server.ReplayRate.
//
// So a slow client costs the server at most QueueBytes of queued
// messages (payloads of group messages are shared with the other
// recipients), plus the batch its writer is sending (up to 64 KiB of
// copied frames and one more frame), for at most WriteTimeout and a half
// before it is dropped.
//
// # Backpressure
//
// A producer that can wait, such as a reader of a durable log, calls
// Server.WaitForRoom before each send: it returns at once while no
// connection has more than half of QueueBytes queued, and otherwise waits
// until the pressed connections drain, at most WriteTimeout, so that one
// client that stays full does not stall everyone. The layer's subscription
// reader never waits.
//
// # Writing
//
// The writer encodes everything it finds queued into one batch and sends
// it with one write system call under one deadline (Server.WriteTimeout):
// a client that cannot take a batch in time is dropped. A frame for a
// busy client, one written to moments ago, waits Server.WriteDelay
// (default 10ms) so that the frames arriving meanwhile share its write; a
// frame for a quiet client is written at once.
//
// # Encode once
//
// A layer message arrives as encoded bytes shared by every local member
// of its group. ForwardToClient writes those bytes unchanged, so a group
// message is encoded once per instance, not once per recipient; the
// writer puts a forwarded message's bytes straight after its frame header
// (a large one is sent from the shared bytes themselves, with a vectored
// write).
//
// # Resuming
//
// A client resumes groups that keep a history from where it was:
// Conn.JoinFrom replays what it missed, then the live stream, or sends a
// Resync frame naming the group when that is impossible. Positions come as
// comma-separated entries, each a bare history id (the route's default
// group) or group:id; a Forwarder reads them from the "since" query
// parameter, the Last-Event-ID header and the resume frame, and an event
// stream in several groups writes the whole list as each event's id.
//
// # Forwarder
//
// Forwarder is the consumer most routes need, configured rather than
// written: the groups a connection joins at connect, the group patterns
// its client may subscribe to (narrowing Server.PublicGroups and the
// token's groups, never widening them), and the message types forwarded
// to the client (patterns, "*" for every type). It speaks the subscribe,
// unsubscribe, resume and whoami frames, resumes and streams events. A
// message of a type the route does not forward is dropped when it is
// dispatched and counted in Stats.Dropped.NotForwarded: the layer has
// delivered it to the connection by then, so a group send that reached
// only such members still counts as received. The package names no
// application; a server's routes are its own configuration.
//
// # Client frames
//
// Text frames must be valid UTF-8 (else close 1007) and at most
// Server.ReadLimit bytes (default 64 KiB, else close 1009); binary frames
// close with 1003. The JSON base answers a text frame that is not a JSON
// object with {"type":"error","code":"bad_request","error":"..."} and
// keeps the connection. Refusals before the upgrade are JSON too,
// {"error":"...","code":"..."}, with the codes the router's answers use.
//
// Close codes are listed, with whether to reconnect, in close.go.
package consumer
