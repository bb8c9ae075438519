package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// msgKey names one message of the soak: its stream (an API group, or
// "post" for rows inserted into posts) and its sequence number there.
type msgKey struct {
	src string
	seq int
}

func (k msgKey) String() string { return fmt.Sprintf("%s#%d", k.src, k.seq) }

const postSrc = "post"

// Outcomes of a publish, as the publisher was told.
const (
	outAccepted = "accepted" // 2xx (sent or kept), or a committed post
	outRefused  = "refused"  // 4xx, or 5xx with no later success of the same key
	outUnknown  = "unknown"  // no answer (the instance died): may or may not be applied
)

// published is what the publisher knows of one message.
type published struct {
	key     msgKey
	group   string
	start   time.Time // the first attempt
	outcome string
	answers []string // every attempt's answer, for the report
}

// chaosLedger records every publish.
type chaosLedger struct {
	mu   sync.Mutex
	msgs map[msgKey]*published
	byG  map[string][]*published // in seq order
}

func newChaosLedger() *chaosLedger {
	return &chaosLedger{msgs: map[msgKey]*published{}, byG: map[string][]*published{}}
}

func (l *chaosLedger) begin(k msgKey, group string, at time.Time) *published {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &published{key: k, group: group, start: at, outcome: outUnknown}
	l.msgs[k] = p
	l.byG[group] = append(l.byG[group], p)
	return p
}

func (l *chaosLedger) set(p *published, outcome, answer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if outcome != "" {
		p.outcome = outcome
	}
	if answer != "" && len(p.answers) < 20 {
		p.answers = append(p.answers, answer)
	}
}

func (l *chaosLedger) get(k msgKey) *published {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs[k]
}

func (l *chaosLedger) group(g string) []*published {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*published, len(l.byG[g]))
	copy(out, l.byG[g])
	return out
}

// apiPublisher sends numbered messages to one group through the API of a
// random instance, one at a time, so that the group's accepted messages
// are in seq order. A message refused with 429 or 5xx, or left without an
// answer, is sent again with the same Idempotency-Key until it is
// accepted or chaosSendPatience runs out.
type apiPublisher struct {
	group  string
	stream string // the messages' source in their key: group, or a burst's own
	every  time.Duration
	pad    int // bytes of padding in each message
	record bool
	addrs  []string
	ledger *chaosLedger
	client *http.Client
	rng    *rand.Rand

	mu       sync.Mutex
	seq      int
	accepted int // sends answered 2xx
}

const chaosSendPatience = 10 * time.Second

func newAPIPublisher(h *chaosRun, group string, every time.Duration, pad int, record bool, seed uint64) *apiPublisher {
	return &apiPublisher{
		group: group, stream: group, every: every, pad: pad, record: record, addrs: h.addrs, ledger: h.ledger,
		client: &http.Client{Timeout: 6 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		rng:    rand.New(rand.NewPCG(seed, 1)),
	}
}

func (p *apiPublisher) run(ctx context.Context) {
	defer p.client.CloseIdleConnections()
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.publishNext(ctx)
	}
}

// publishNext sends the next message and returns its key and outcome.
func (p *apiPublisher) publishNext(ctx context.Context) (msgKey, string) {
	p.mu.Lock()
	p.seq++
	k := msgKey{src: p.stream, seq: p.seq}
	p.mu.Unlock()
	var rec *published
	if p.record {
		rec = p.ledger.begin(k, p.group, time.Now())
	}
	outcome := p.send(ctx, k, rec)
	return k, outcome
}

func (p *apiPublisher) send(ctx context.Context, k msgKey, rec *published) string {
	body := fmt.Sprintf(`{"type":"name.gossip","src":"api","g":%q,"s":%q,"seq":%d`, p.group, p.stream, k.seq)
	if p.pad > 0 {
		body += `,"pad":"` + strings.Repeat("x", p.pad) + `"`
	}
	body += "}"
	key := fmt.Sprintf("chaos-%s-%d", p.stream, k.seq)
	deadline := time.Now().Add(chaosSendPatience)
	// Refused unless some attempt went unanswered: that one may have
	// been applied.
	outcome := outRefused
	note := func(s string) {
		if rec != nil {
			p.ledger.set(rec, "", s)
		}
	}
	for try := 0; time.Now().Before(deadline); try++ {
		addr := p.addrs[p.rng.IntN(len(p.addrs))]
		code, answer, err := p.post(ctx, addr, key, body)
		var wait time.Duration
		switch {
		case err != nil:
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				note(addr + " refused the connection")
			} else {
				note(addr + ": " + err.Error())
				outcome = outUnknown
			}
			wait = 20 * time.Millisecond
		case code >= 200 && code < 300:
			note(fmt.Sprintf("%s %d %s", addr, code, answer))
			return p.finish(rec, outAccepted)
		case code == http.StatusTooManyRequests || code >= 500:
			note(fmt.Sprintf("%s %d %s", addr, code, answer))
			wait = 100 * time.Millisecond
		default: // any other 4xx is final
			note(fmt.Sprintf("%s %d %s", addr, code, answer))
			return p.finish(rec, outcome)
		}
		select {
		case <-ctx.Done():
			note("publisher stopped")
			return p.finish(rec, outcome)
		case <-time.After(wait + time.Duration(p.rng.Int64N(int64(wait)))):
		}
	}
	return p.finish(rec, outcome)
}

func (p *apiPublisher) finish(rec *published, outcome string) string {
	if outcome == outAccepted {
		p.mu.Lock()
		p.accepted++
		p.mu.Unlock()
	}
	if rec != nil {
		p.ledger.set(rec, outcome, "")
	}
	return outcome
}

func (p *apiPublisher) post(ctx context.Context, addr, key, body string) (int, string, error) {
	// The request outlives the publisher's stop, so that a send in flight
	// gets its answer.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+addr+"/api/groups/"+p.group+"/send", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// sqlPublisher inserts numbered posts straight into Postgres, one
// transaction at a time: single rows at its pace, and on request a
// transaction of many rows. Commits are sequential, so commit order is
// seq order. Which posts committed is read back from the table at the
// end: a commit whose answer was lost may have happened.
type sqlPublisher struct {
	url    string
	every  time.Duration
	ledger *chaosLedger
	bursts chan int

	mu   sync.Mutex
	seq  int
	errs int
	conn *pgx.Conn
}

func (s *sqlPublisher) run(ctx context.Context) {
	defer func() {
		if s.conn != nil {
			s.conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	for {
		n := 1
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case n = <-s.bursts:
		}
		s.insert(ctx, n)
	}
}

// insert commits n posts in one transaction.
func (s *sqlPublisher) insert(ctx context.Context, n int) {
	s.mu.Lock()
	first := s.seq + 1
	s.seq += n
	s.mu.Unlock()
	now := time.Now()
	recs := make([]*published, 0, n)
	for i := first; i < first+n; i++ {
		recs = append(recs, s.ledger.begin(msgKey{postSrc, i}, "gossip", now))
	}
	if err := s.exec(ctx, first, n); err != nil {
		s.mu.Lock()
		s.errs++
		s.mu.Unlock()
		for _, p := range recs {
			s.ledger.set(p, "", "commit: "+err.Error())
		}
	}
}

func (s *sqlPublisher) exec(ctx context.Context, first, n int) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if s.conn == nil || s.conn.IsClosed() {
		c, err := pgx.Connect(ctx, s.url)
		if err != nil {
			return err
		}
		s.conn = c
	}
	_, err := s.conn.Exec(ctx,
		`INSERT INTO posts (author, message) SELECT 'chaos', 'p' || g FROM generate_series($1::int, $2::int) g ORDER BY g`,
		first, first+n-1)
	if err != nil {
		s.conn.Close(context.Background())
		s.conn = nil
	}
	return err
}

// settleOutcomes reads back which posts committed.
func (s *sqlPublisher) settleOutcomes(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, `SELECT message FROM posts WHERE author = 'chaos'`)
	if err != nil {
		return err
	}
	committed := map[int]bool{}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return err
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(m, "p")); err == nil {
			committed[n] = true
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, p := range s.ledger.group("gossip") {
		if p.key.src != postSrc {
			continue
		}
		if committed[p.key.seq] {
			s.ledger.set(p, outAccepted, "")
		} else {
			s.ledger.set(p, outRefused, "not in posts: rolled back")
		}
	}
	return nil
}

// startPublishers starts one API publisher per group and the SQL one.
func (h *chaosRun) startPublishers(ctx context.Context, wg *sync.WaitGroup) {
	for i, g := range append(append([]string{}, chaosHistoryGroups...), chaosLive) {
		p := newAPIPublisher(h, g, 40*time.Millisecond, 0, true, h.cfg.seed+uint64(i))
		h.api = append(h.api, p)
		wg.Add(1)
		go func() { defer wg.Done(); p.run(ctx) }()
	}
	// Large messages for the client that stops reading, so that its queue
	// fills within seconds whatever the socket buffers hold.
	slow := newAPIPublisher(h, chaosSlow, 10*time.Millisecond, 16000, false, h.cfg.seed+99)
	h.slow = slow
	wg.Add(1)
	go func() { defer wg.Done(); slow.run(ctx) }()

	h.sql = &sqlPublisher{url: h.pg.URL(), every: 60 * time.Millisecond, ledger: h.ledger, bursts: make(chan int)}
	wg.Add(1)
	go func() { defer wg.Done(); h.sql.run(ctx) }()
}

// burst sends n messages to gossip from 8 senders at once, each its own
// stream (its order is its own), as a backend that publishes a few
// thousand messages in a second does.
func (h *chaosRun) burst(n int) {
	h.bursts++
	var wg sync.WaitGroup
	for w := range 8 {
		p := newAPIPublisher(h, "gossip", time.Millisecond, 0, true, h.cfg.seed+uint64(1000*h.bursts+w))
		p.stream = fmt.Sprintf("gossip~burst%d.%d", h.bursts, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.client.CloseIdleConnections()
			for range n / 8 {
				p.publishNext(context.Background())
			}
		}()
	}
	wg.Wait()
}

// sendMarkers publishes a last message to every group and a last post,
// once the faults are over, and returns their keys: a client that has
// them all has everything sent before.
func (h *chaosRun) sendMarkers(ctx context.Context) []msgKey {
	var keys []msgKey
	for _, p := range h.api {
		for range 3 {
			k, out := p.publishNext(ctx)
			if out == outAccepted {
				keys = append(keys, k)
				break
			}
		}
	}
	h.sql.insert(ctx, 1)
	h.sql.mu.Lock()
	keys = append(keys, msgKey{postSrc, h.sql.seq})
	h.sql.mu.Unlock()
	if err := h.sql.settleOutcomes(ctx); err != nil {
		h.violations.add("settle", "", "reading back the committed posts: "+err.Error())
	}
	return keys
}

// frame is what the soak's clients read; fields of API messages and of
// posts both.
type frame struct {
	Type    string          `json:"type"`
	Src     string          `json:"src"`
	G       string          `json:"g"`
	S       string          `json:"s"`
	Seq     int             `json:"seq"`
	Sender  string          `json:"sender"`
	Message string          `json:"message"`
	ID      string          `json:"herald_id"`
	Group   json.RawMessage `json:"group"`
}

// key returns the message's key and group, or ok false for a frame that
// is none of the soak's messages.
func (f *frame) key() (k msgKey, group string, ok bool) {
	switch {
	case f.Src == "api" && f.G != "" && f.S != "":
		return msgKey{f.S, f.Seq}, f.G, true
	case f.Sender == "chaos" && strings.HasPrefix(f.Message, "p"):
		n, err := strconv.Atoi(f.Message[1:])
		return msgKey{postSrc, n}, "gossip", err == nil
	}
	return msgKey{}, "", false
}
