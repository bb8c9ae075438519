package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/consumer"
)

// Issue 7 with real processes: clients resuming by history id lose
// nothing and receive nothing twice while their connections are killed
// at random moments and every instance under them is restarted in turn.
const (
	resumeTotal = 10000 // messages the publisher has accepted
	resumeKills = 20    // connections each client kills
	// resumeLead is the most messages the publisher gets ahead of the
	// slowest client. Below the default queue size (256), so a client that
	// keeps reading is never closed as too slow (4008): every close a
	// client sees is one the test caused.
	resumeLead = 200
	// resumeTimeout bounds one run against a hang; on a loaded CI machine
	// the -race build of three instances takes a good part of it.
	resumeTimeout = 150 * time.Second
)

// resumeRestartAt are the numbers of messages every client has received
// at the moments an instance may be restarted. Each is used for the first
// instance not restarted yet, or for the instance of a client that no
// restart has closed yet, until both are done; the publisher stops
// resumeGate messages later until the restart is done, so that every
// restart happens under the stream.
var resumeRestartAt = [...]int{1500, 3000, 4500, 6000, 7500, 9000}

const resumeGate = 1000

// TestResumeAcrossRestarts publishes 10,000 messages to gossip through
// the API of three instances on one Redis, while two clients, a
// WebSocket and an event stream, each kill their connection at 20 random
// moments, and each instance is restarted (SIGTERM, then a new process on
// the same address). The clients resume each time from their last
// herald_id, on whichever instance is up. What each receives must be what
// the API accepted: same messages, same order, none twice, and never a
// resync. The two clients share one stream because the instances, built
// with -race, spend most of the run's time on the publisher's sends.
func TestResumeAcrossRestarts(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ru := redisURL(t)
	cl := &resumeCluster{t: t, env: []string{
		"REDIS_URL=" + ru,
		"HERALD_REDIS_PREFIX=" + layertest.Prefix(t),
		"HERALD_HISTORY=gossip:20000:10m", // the whole stream: no resync is excusable
		"HERALD_SHUTDOWN_TIMEOUT=5s",
	}}
	for range 3 {
		cl.insts = append(cl.insts, startHerald(t, cl.env...))
	}
	var addrs []string
	for _, in := range cl.insts {
		in.waitReady(t)
		addrs = append(addrs, in.addr)
	}

	// The seed picks where clients are killed and instances restarted;
	// HERALD_TEST_SEED replays a logged one (the timing is the machine's).
	seed := rand.Uint64()
	if s := os.Getenv("HERALD_TEST_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("HERALD_TEST_SEED=%q: %v", s, err)
		}
	}
	t.Logf("seed %d (HERALD_TEST_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	ctx, cancel := context.WithTimeout(context.Background(), resumeTimeout)
	defer cancel()
	var clients []*resumeClient
	for i, tc := range []struct {
		name string
		dial resumeDial
	}{{"WebSocket", dialResumeWS}, {"event stream", dialResumeSSE}} {
		killAt := map[int]bool{}
		for len(killAt) < resumeKills {
			killAt[1+rng.IntN(resumeTotal-1)] = true
		}
		rc := &resumeClient{name: tc.name, dial: tc.dial, addrs: addrs, next: i, killAt: killAt,
			progress: make(chan struct{}, 1), connected: make(chan struct{}), done: make(chan struct{})}
		clients = append(clients, rc)
		go rc.run(ctx)
	}
	pubExited := make(chan struct{})
	defer func() {
		cancel()
		for _, rc := range clients {
			<-rc.done
		}
		<-pubExited
	}()
	// Each client must be a member before the first message: without an
	// id to resume from, a first connection gets the live stream only.
	for _, rc := range clients {
		select {
		case <-rc.connected:
		case <-rc.done:
			t.Fatalf("%s client never connected: %v", rc.name, rc.err())
		case <-ctx.Done():
			t.Fatalf("%s client never connected", rc.name)
		}
	}

	var restarted [len(resumeRestartAt)]chan struct{}
	for k := range restarted {
		restarted[k] = make(chan struct{})
	}
	pub := &resumePublisher{addrs: addrs, client: &http.Client{Transport: &http.Transport{}, Timeout: wait}}
	defer pub.client.CloseIdleConnections()
	pubDone := make(chan error, 1)
	go func() {
		defer close(pubExited)
		pubDone <- pub.run(ctx, clients, func(seq int) <-chan struct{} {
			for k, at := range resumeRestartAt {
				if seq == at+resumeGate {
					return restarted[k]
				}
			}
			return nil
		})
	}()

	// Restart every instance once, under the stream, and make sure that
	// every client is on one of them when it stops, so that it is told to
	// go (1012) and must resume elsewhere.
	done := make([]bool, len(cl.insts))
	var restarts []string
	for k, at := range resumeRestartAt {
		for _, rc := range clients {
			rc.waitFor(t, ctx, fmt.Sprintf("%d messages", at), func() bool { return rc.count() >= at })
		}
		var on []string // instances of the clients no restart has closed yet
		for _, rc := range clients {
			if rc.restarts.Load() == 0 {
				rc.waitFor(t, ctx, "a connection", func() bool { return rc.on() != "" })
				on = append(on, rc.on())
			}
		}
		if i := cl.pick(on, done); i >= 0 {
			began := time.Now()
			done[i] = true
			cl.restart(i)
			restarts = append(restarts, fmt.Sprintf("#%d at %d in %v", i, at, time.Since(began).Round(time.Millisecond)))
		}
		close(restarted[k])
	}
	if slices.Contains(done, false) {
		t.Fatalf("not every instance was restarted: %v", done)
	}
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("publisher did not finish: %d accepted", len(pub.accepted()))
	}

	// A marker after the stream: once a client has it, it has received
	// everything published before it, and nothing can still come between.
	const marker = -1
	if err := pub.send(ctx, resumeMsg{Seq: marker}); err != nil {
		t.Fatalf("publishing the end marker: %v", err)
	}
	for _, rc := range clients {
		rc.waitFor(t, ctx, "the end marker", func() bool { return rc.has(marker) })
	}
	cancel()
	published := pub.accepted()
	published = published[:len(published)-1] // the marker
	t.Logf("seed %d: %d published (%d kept with no member, %d attempts refused); restarts %v; %v",
		seed, len(published), pub.kept, pub.refused, restarts, time.Since(start).Round(time.Millisecond))
	for _, rc := range clients {
		<-rc.done
		got := rc.received()
		got = got[:slices.IndexFunc(got, func(r resumeRecv) bool { return r.msg.Seq == marker })]
		conns := rc.conns()
		t.Logf("%s: %d received over %d connections; %d kills, %d restart closes (1012)",
			rc.name, len(got), len(conns), rc.kills, rc.restarts.Load())
		if err := rc.err(); err != nil {
			t.Errorf("%s: %v", rc.name, err)
		}
		if diff := resumeDiff(got, published, conns); diff != "" {
			t.Errorf("%s: received sequence differs from the published one (seed %d, kills at %v):\n%s",
				rc.name, seed, slices.Sorted(maps.Keys(rc.killAt)), diff)
		}
		if rc.kills != resumeKills {
			t.Errorf("%s: client killed %d connections, want %d", rc.name, rc.kills, resumeKills)
		}
		if rc.restarts.Load() == 0 {
			t.Errorf("%s: no restart closed the client's connection (1012): its resume after a restart went untested", rc.name)
		}
	}
}

// resumeCluster is the instances of one run, which the test goroutine
// restarts in place: their addresses never change, and the publisher and
// the clients, which know nothing of the restarts, find out which
// instances are up by trying them.
type resumeCluster struct {
	t     *testing.T
	env   []string
	insts []*instance
}

// pick chooses the instance to restart: one with a client on it (at one
// of on), preferably not restarted yet, or else the first one not
// restarted yet; -1 when no restart is needed.
func (cl *resumeCluster) pick(on []string, done []bool) int {
	at := -1
	for i, in := range cl.insts {
		if slices.Contains(on, in.addr) && (at < 0 || !done[i]) {
			at = i
		}
	}
	if at >= 0 {
		return at
	}
	return slices.Index(done, false)
}

// restart stops instance i with SIGTERM, as an orchestrator does, and
// starts a new process on the same address.
func (cl *resumeCluster) restart(i int) {
	t := cl.t
	t.Helper()
	cl.insts[i] = restartHerald(t, cl.insts[i], syscall.SIGTERM, cl.env...)
}

// resumeMsg is what the publisher sends: its sequence number, and which
// attempt at sending it this is, so that an attempt the publisher saw
// fail can be told apart if it shows up anyway.
type resumeMsg struct {
	Seq int `json:"seq"`
	Try int `json:"try"`
}

func (m resumeMsg) String() string { return fmt.Sprintf("%d/%d", m.Seq, m.Try) }

// resumePublisher sends to gossip through the API of whichever instance
// is up, one message at a time, so that the order the API accepted them
// in is the order of the group's history.
type resumePublisher struct {
	addrs  []string
	client *http.Client
	next   int // round-robin over addrs

	mu      sync.Mutex
	acc     []resumeMsg // accepted (202), in order
	kept    int         // of which "kept": the group had no member then
	refused int         // attempts that failed, retried elsewhere
}

// run publishes resumeTotal messages, never more than resumeLead ahead of
// the slowest client. Before message seq it waits for gate(seq), if not
// nil.
func (p *resumePublisher) run(ctx context.Context, clients []*resumeClient, gate func(seq int) <-chan struct{}) error {
	for seq := 1; seq <= resumeTotal; seq++ {
		for _, rc := range clients {
			for seq-1-rc.count() >= resumeLead {
				select {
				case <-rc.progress:
				case <-rc.done:
					return fmt.Errorf("%s client stopped at %d received: %v", rc.name, rc.count(), rc.err())
				case <-ctx.Done():
					return fmt.Errorf("%s client stuck at %d received, %d published", rc.name, rc.count(), seq-1)
				}
			}
		}
		if g := gate(seq); g != nil {
			select {
			case <-g:
			case <-ctx.Done():
				return fmt.Errorf("restart before message %d did not finish", seq)
			}
		}
		if err := p.send(ctx, resumeMsg{Seq: seq}); err != nil {
			return err
		}
	}
	return nil
}

// send posts m until an instance accepts it, each attempt to the next
// instance. A refused connection or an error answer means the message
// was not accepted: it is sent again, as a new attempt.
func (p *resumePublisher) send(ctx context.Context, m resumeMsg) error {
	deadline := time.Now().Add(wait)
	var last error
	for ; ; m.Try++ {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("message %d not accepted in %v: %v", m.Seq, wait, last)
		}
		if m.Try > 0 && m.Try%len(p.addrs) == 0 {
			// Every instance refused: give the restarting one a moment.
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		addr := p.addrs[p.next%len(p.addrs)]
		p.next++
		var status string
		status, last = p.post(ctx, addr, m)
		if last == nil {
			p.mu.Lock()
			p.acc = append(p.acc, m)
			if status == "kept" {
				p.kept++
			}
			p.mu.Unlock()
			return nil
		}
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
	}
}

func (p *resumePublisher) post(ctx context.Context, addr string, m resumeMsg) (string, error) {
	body := fmt.Sprintf(`{"type":"name.gossip","seq":%d,"try":%d}`, m.Seq, m.Try)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/groups/gossip/send", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var ok struct{ Status string }
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &ok) != nil || (ok.Status != "sent" && ok.Status != "kept") {
		return "", fmt.Errorf("%s: %d %s", addr, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return ok.Status, nil
}

func (p *resumePublisher) accepted() []resumeMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acc)
}

// resumeStream is one connection of a resuming client.
type resumeStream interface {
	// next returns the next frame and its event id (event streams only),
	// or the error that ended the connection: a *serverClose when the
	// server closed it with a code.
	next(ctx context.Context) (frame []byte, eventID string, err error)
	// kill drops the connection without a goodbye, as a lost network does.
	kill()
}

// resumeDial opens a connection to /notifications/ on addr, resuming
// after the history id since ("": a first connection).
type resumeDial func(ctx context.Context, addr, since string) (resumeStream, error)

// serverClose is a connection the server closed with code.
type serverClose struct{ code int }

func (e *serverClose) Error() string { return fmt.Sprintf("closed by the server with %d", e.code) }

type wsResume struct{ c *websocket.Conn }

func dialResumeWS(ctx context.Context, addr, since string) (resumeStream, error) {
	u := "ws://" + addr + "/notifications/"
	if since != "" {
		u += "?since=" + url.QueryEscape(since)
	}
	dctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	c, _, err := websocket.Dial(dctx, u, nil)
	if err != nil {
		return nil, err
	}
	return wsResume{c}, nil
}

func (s wsResume) next(ctx context.Context) ([]byte, string, error) {
	_, data, err := s.c.Read(ctx)
	if code := websocket.CloseStatus(err); code != -1 {
		return nil, "", &serverClose{int(code)}
	}
	return data, "", err
}

func (s wsResume) kill() { s.c.CloseNow() }

// sseResume reads an event stream: lines of "field: value", events ended
// by a blank line, comments starting with ':'.
type sseResume struct {
	cancel context.CancelFunc
	body   io.ReadCloser
	r      *bufio.Reader
}

// resumeSSETransport makes a connection per stream, so that killing one
// drops its TCP connection and nothing is reused.
var resumeSSETransport = &http.Transport{
	DisableKeepAlives:     true,
	DialContext:           (&net.Dialer{Timeout: wait}).DialContext,
	ResponseHeaderTimeout: wait,
}

func dialResumeSSE(ctx context.Context, addr, since string) (resumeStream, error) {
	sctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, "http://"+addr+"/notifications/", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if since != "" {
		req.Header.Set("Last-Event-ID", since)
	}
	resp, err := (&http.Client{Transport: resumeSSETransport}).Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s: %s (%s)", addr, resp.Status, resp.Header.Get("Content-Type"))
	}
	return &sseResume{cancel: cancel, body: resp.Body, r: bufio.NewReader(resp.Body)}, nil
}

func (s *sseResume) next(context.Context) ([]byte, string, error) {
	var id, event string
	var data []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the server ends a stream with a close event
			}
			return nil, "", err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			switch {
			case event == "close":
				var ce consumer.CloseEvent
				if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &ce); err != nil {
					return nil, "", fmt.Errorf("close event %q: %v", data, err)
				}
				return nil, "", &serverClose{ce.Code}
			case len(data) > 0:
				return []byte(strings.Join(data, "\n")), id, nil
			}
			id, event, data = "", "", nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id = value
		case "event":
			event = value
		case "data":
			data = append(data, value)
		}
	}
}

func (s *sseResume) kill() {
	s.cancel()
	s.body.Close()
}

// resumeRecv is one message the client received, and on which of its
// connections.
type resumeRecv struct {
	msg  resumeMsg
	id   string
	conn int
}

// resumeConn is one connection of the client, for the failure report.
type resumeConn struct {
	addr, since string
	first, n    int    // index of its first message, and how many it got
	end         string // how it ended
}

// resumeClient receives gossip, resuming from its last id after every
// close: its own kills at the numbers of received messages in killAt,
// and the servers' 1012 when they restart.
type resumeClient struct {
	name   string
	dial   resumeDial
	addrs  []string // tried in turn
	next   int      // round-robin over addrs
	killAt map[int]bool

	progress  chan struct{} // capacity 1: a message was received
	connected chan struct{} // closed at the first connection
	done      chan struct{} // closed when run returns

	mu       sync.Mutex
	got      []resumeRecv
	last     string // herald_id of the last message
	cs       []resumeConn
	addr     string // the instance connected to now
	failure  error
	n        atomic.Int64 // len(got)
	restarts atomic.Int32 // connections closed with 1012
	kills    int          // read after done
}

func (rc *resumeClient) run(ctx context.Context) {
	defer close(rc.done)
	refused := 0
	for ctx.Err() == nil {
		addr := rc.addrs[rc.next%len(rc.addrs)]
		rc.next++
		rc.mu.Lock()
		since := rc.last
		rc.mu.Unlock()
		if since == "" && len(rc.cs) > 0 {
			rc.fail(errors.New("the first connection ended before any message: nothing to resume from"))
			return
		}
		s, err := rc.dial(ctx, addr, since)
		if err != nil {
			// Stopping or not started yet: try the next. When every
			// instance refused, wait a moment first.
			if refused++; refused%len(rc.addrs) == 0 {
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
			continue
		}
		refused = 0
		rc.mu.Lock()
		rc.cs = append(rc.cs, resumeConn{addr: addr, since: since, first: len(rc.got)})
		rc.addr = addr
		rc.mu.Unlock()
		if len(rc.cs) == 1 {
			close(rc.connected)
		}
		end, err := rc.read(ctx, s)
		s.kill()
		rc.mu.Lock()
		c := &rc.cs[len(rc.cs)-1]
		c.n, c.end = len(rc.got)-c.first, end
		rc.addr = ""
		rc.mu.Unlock()
		if err != nil {
			rc.fail(fmt.Errorf("connection %d to %s (since %q): %w", len(rc.cs), addr, since, err))
			return
		}
	}
}

// read receives on s until the connection ends, and says how it ended.
// It returns an error for any end the test did not cause.
func (rc *resumeClient) read(ctx context.Context, s resumeStream) (string, error) {
	for {
		data, eventID, err := s.next(ctx)
		var sc *serverClose
		switch {
		case ctx.Err() != nil:
			return "test over", nil
		case errors.As(err, &sc) && sc.code == int(consumer.StatusServiceRestart):
			rc.restarts.Add(1)
			return "1012", nil
		case err != nil:
			return err.Error(), err
		}
		var f struct {
			Type string `json:"type"`
			resumeMsg
			ID string `json:"herald_id"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			return "bad frame", fmt.Errorf("frame %s: %v", data, err)
		}
		switch {
		case f.Type == "resync":
			return "resync", fmt.Errorf("resync after %d messages: the history should have covered the gap", rc.count())
		case f.Type != "name.gossip":
			return "stray frame", fmt.Errorf("unexpected frame %s", data)
		case f.ID == "" || (eventID != "" && eventID != f.ID):
			return "bad id", fmt.Errorf("frame %s with event id %q", data, eventID)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, resumeRecv{msg: f.resumeMsg, id: f.ID, conn: len(rc.cs)})
		rc.last = f.ID
		n := len(rc.got)
		rc.mu.Unlock()
		rc.n.Store(int64(n))
		select {
		case rc.progress <- struct{}{}:
		default:
		}
		if rc.killAt[n] {
			rc.kills++
			return "killed by the client", nil
		}
	}
}

func (rc *resumeClient) fail(err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.failure == nil {
		rc.failure = err
	}
}

func (rc *resumeClient) err() error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.failure
}

func (rc *resumeClient) count() int { return int(rc.n.Load()) }

// on returns the address of the instance the client is connected to, or
// "" between connections.
func (rc *resumeClient) on() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.addr
}

func (rc *resumeClient) received() []resumeRecv {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func (rc *resumeClient) conns() []resumeConn {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.cs)
}

// has reports whether the client received message seq.
func (rc *resumeClient) has(seq int) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.ContainsFunc(rc.got, func(r resumeRecv) bool { return r.msg.Seq == seq })
}

// waitFor polls cond until it holds, failing t when the client stops or
// ctx ends first.
func (rc *resumeClient) waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-rc.done:
			t.Fatalf("%s client stopped before %s (received %d): %v", rc.name, what, rc.count(), rc.err())
		case <-ctx.Done():
			t.Fatalf("%s client did not receive %s in time (received %d)", rc.name, what, rc.count())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// resumeDiff describes how got differs from want: the first difference,
// with the messages around it and the connections they came on, or ""
// if they are equal. Equal sequences must also carry increasing ids.
func resumeDiff(got []resumeRecv, want []resumeMsg, conns []resumeConn) string {
	i := 0
	for i < len(got) && i < len(want) && got[i].msg == want[i] {
		i++
	}
	if i == len(got) && i == len(want) {
		for j := 1; j < len(got); j++ {
			a, _ := channellayer.ParseID(got[j-1].id)
			b, _ := channellayer.ParseID(got[j].id)
			if a.Compare(b) >= 0 {
				return fmt.Sprintf("message %d has id %s, not after %s", j, got[j].id, got[j-1].id)
			}
		}
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "received %d, published %d; first difference at index %d\n", len(got), len(want), i)
	// What kind of difference: twice, never, or never accepted.
	published := make(map[resumeMsg]bool, len(want))
	for _, m := range want {
		published[m] = true
	}
	at := make(map[resumeMsg][]int, len(got))
	for j, r := range got {
		at[r.msg] = append(at[r.msg], j)
	}
	var twice, missing, unknown []string
	for j, r := range got {
		switch idx := at[r.msg]; {
		case !published[r.msg]:
			unknown = append(unknown, fmt.Sprintf("%s at %d (#%d)", r.msg, j, r.conn))
		case len(idx) > 1 && idx[0] == j:
			var where []string
			for _, k := range idx {
				where = append(where, fmt.Sprintf("%d (#%d, %s)", k, got[k].conn, got[k].id))
			}
			twice = append(twice, fmt.Sprintf("%s at %s", r.msg, strings.Join(where, ", ")))
		}
	}
	for _, m := range want {
		if len(at[m]) == 0 {
			missing = append(missing, m.String())
		}
	}
	for _, l := range []struct {
		what string
		list []string
	}{{"received more than once", twice}, {"never received", missing}, {"received but never accepted", unknown}} {
		if len(l.list) > 0 {
			fmt.Fprintf(&b, "%d %s: %s\n", len(l.list), l.what, strings.Join(l.list[:min(len(l.list), 20)], "; "))
		}
	}
	fmt.Fprintln(&b, "index  received (seq/try id conn)  published")
	for j := max(0, i-5); j < i+6 && (j < len(got) || j < len(want)); j++ {
		g, w := "-", "-"
		if j < len(got) {
			g = fmt.Sprintf("%s %s #%d", got[j].msg, got[j].id, got[j].conn)
		}
		if j < len(want) {
			w = want[j].String()
		}
		fmt.Fprintf(&b, "%5d  %-30s %s\n", j, g, w)
	}
	fmt.Fprintln(&b, "connections (#, instance, since, first index, messages, end):")
	for k, c := range conns {
		fmt.Fprintf(&b, "  #%d %s since=%q first=%d n=%d end=%s\n", k+1, c.addr, c.since, c.first, c.n, c.end)
	}
	return b.String()
}
