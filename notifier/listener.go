package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/channellayer"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for a zero Config.
const (
	DefaultGroup        = "gossip"
	DefaultMinBackoff   = 250 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultPollInterval = 10 * time.Second
	DefaultRetention    = 24 * time.Hour
)

// pageSize is how many log rows one read returns, which bounds the
// Listener's memory however long the backlog.
const pageSize = 500

// queryTimeout bounds one read of the log, so that a server that died
// without a word is noticed.
const queryTimeout = 30 * time.Second

// pruneBatch is the most log rows one prune deletes, so that a long
// backlog is pruned in steps rather than by one huge statement.
const pruneBatch = 10000

// maxPruneEvery caps the time between two prunes.
const maxPruneEvery = 10 * time.Minute

// maxHoldBackoff caps the wait between two offers of a row the layer
// could not take (see Listener.deliver), so that held rows flow within
// seconds of the layer's return, whatever MaxBackoff is.
const maxHoldBackoff = 5 * time.Second

// applicationName marks the Listener's session in pg_stat_activity
// unless the connection string names one already.
const applicationName = "herald-notifier"

// Config configures a Listener. The zero value is ready to use.
type Config struct {
	// Bridges lists the tables whose inserts are delivered, and where.
	// Default (empty): PostsBridge(DefaultGroup), posts to "gossip".
	// Rows of tables not listed here are skipped, so instances may bridge
	// different tables.
	Bridges []Bridge
	// Logger receives reconnects and skipped rows. Default:
	// slog.Default().
	Logger *slog.Logger
	// MinBackoff is the wait before the first reconnect after a failure;
	// it doubles on each failure up to MaxBackoff, with jitter so that
	// instances do not reconnect in step. Default: DefaultMinBackoff
	// (250ms).
	MinBackoff time.Duration
	// MaxBackoff caps the wait between reconnects. Default:
	// DefaultMaxBackoff (30s).
	MaxBackoff time.Duration
	// PollInterval is how long the Listener waits for a notification
	// before reading the log anyway. The read doubles as a check that the
	// connection is alive. Default: DefaultPollInterval (10s).
	PollInterval time.Duration
	// SharedLayer says that every instance reading this log sends on one
	// layer (Redis or Redis Cluster), as opposed to a layer of its own
	// (memory). Then each page of the log is sent under row locks in
	// herald_sent, which records the highest seq sent per bridge, so that
	// a row is sent once even after Redis loses its own record of what was
	// sent. Default false: each Listener offers every row to its layer.
	SharedLayer bool
	// Retention is how long rows stay in the log, and so how long a
	// Listener may be away and still catch up everything. Every Listener
	// prunes older rows. Default: DefaultRetention (24h).
	Retention time.Duration
	// Pace, if set, is called before each row is sent and waited for: it
	// returns when the receivers can take more, so that a burst in the
	// log (a bulk import of thousands of rows) is delivered as fast as
	// the members accept it rather than overrunning their queues. An
	// error ends the wait: the row is not sent, and the Listener starts
	// its connection again after backoff (or returns, when ctx is done).
	// Default (nil): no pacing.
	Pace func(ctx context.Context) error
}

// Listener delivers the rows of bridged tables, read from the log in
// commit order, to this instance's members of each bridge's group.
// Create it with New and call Run.
type Listener struct {
	connConfig *pgx.ConnConfig
	bridges    map[string]Bridge // by Table
	shared     bool              // Config.SharedLayer
	layer      channellayer.Layer
	once       bool // the layer sends once; false once it says it cannot
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
	poll       time.Duration
	retention  time.Duration
	pace       func(context.Context) error

	running atomic.Bool
	ready   atomic.Bool
	begun   chan struct{} // closed once the Listener knows where it starts

	// Owned by the goroutine in Run.
	started   bool      // last has been set from the log
	epoch     string    // the log's epoch, read with last
	last      int64     // highest seq delivered (or skipped)
	lastPrune time.Time // when this Listener last pruned the log
	held      bool      // the row after last waits for the layer (see deliver)
	holdWait  time.Duration
}

// New returns a Listener that reads the log through connections
// configured like pool's and sends on layer. It opens its own connection
// rather than borrowing one from pool, so a busy pool cannot hold up
// delivery and the Listener does not hold one of pool's slots. It
// reports an error for a Config that cannot work.
func New(pool *pgxpool.Pool, layer channellayer.Layer, cfg Config) (*Listener, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	bridges, err := validateBridges(cfg.Bridges)
	if err != nil {
		return nil, err
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("notifier: backoff bounds %v..%v are not 0 <= min <= max", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("notifier: negative poll interval %v", cfg.PollInterval)
	}
	if cfg.Retention < 0 {
		return nil, fmt.Errorf("notifier: negative retention %v", cfg.Retention)
	}

	l := &Listener{
		connConfig: pool.Config().ConnConfig,
		bridges:    make(map[string]Bridge, len(bridges)),
		layer:      layer,
		once:       true,
		log:        cfg.Logger,
		minBackoff: cfg.MinBackoff,
		maxBackoff: cfg.MaxBackoff,
		poll:       cfg.PollInterval,
		retention:  cfg.Retention,
		shared:     cfg.SharedLayer,
		pace:       cfg.Pace,
		begun:      make(chan struct{}),
	}
	for _, b := range bridges {
		l.bridges[b.Table] = b
	}
	if _, ok := l.connConfig.RuntimeParams["application_name"]; !ok {
		l.connConfig.RuntimeParams["application_name"] = applicationName
	}
	return l, nil
}

// Ready reports whether the Listener is connected, listening and caught
// up, for a readiness probe.
func (l *Listener) Ready() bool { return l.ready.Load() }

// Run delivers rows until ctx is done, then returns ctx.Err(). Lost
// connections are logged and reopened with backoff; rows committed
// meanwhile are delivered, in commit order, after reconnecting. Run may
// be called again after it returns, and resumes after the last row it
// delivered, but not concurrently.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("notifier: Listener.Run is already running")
	}
	defer l.running.Store(false)

	backoff := l.minBackoff
	for {
		wasReady, err := l.session(ctx)
		l.ready.Store(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wasReady {
			backoff = l.minBackoff
		}
		// Jitter in [backoff/2, backoff] keeps instances that lost the
		// same server from reconnecting in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		l.log.Warn("notifier: not listening, reconnecting", "err", err, "in", wait, "last_seq", l.last)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, l.maxBackoff)
	}
}

// session runs one connection from dial to failure. wasReady reports
// whether it got as far as being ready, so that Run can reset its backoff.
func (l *Listener) session(ctx context.Context) (wasReady bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, l.connConfig)
	if err != nil {
		return false, err
	}
	defer func() {
		// Close sends Terminate; do it even though ctx may be done, but
		// do not wait long on a dead server.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	// LISTEN comes first, so that a row committed during the catch-up
	// below rings again afterwards rather than waiting for a poll.
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, err
	}
	from := l.last
	if err := l.resume(ctx, conn); err != nil {
		return false, err
	}
	if err := l.prune(ctx, conn); err != nil {
		return false, err
	}
	listening := false
	for {
		if !l.held || l.layerBack(ctx) {
			if err := l.catchUp(ctx, conn); err != nil {
				return wasReady, err
			}
		}
		if l.held {
			// Not ready: rows are committed that no client can get yet.
			l.ready.Store(false)
			if err := l.pause(ctx, conn, l.nextHoldWait()); err != nil {
				return wasReady, err
			}
			continue
		}
		l.holdWait = 0
		if !l.ready.Load() {
			l.ready.Store(true)
			wasReady = true
		}
		if !listening {
			listening = true
			l.log.Info("notifier: listening", "channel", Channel, "bridges", len(l.bridges), "caught_up", l.last-from, "last_seq", l.last)
		}
		if err := l.wait(ctx, conn); err != nil {
			return true, err
		}
		if time.Since(l.lastPrune) >= min(l.retention, maxPruneEvery) {
			if err := l.prune(ctx, conn); err != nil {
				return true, err
			}
		}
	}
}

// layerBack reports whether a held row may be offered again: the layer
// answers its probe (Layer.Check), which for the Redis layers includes
// this instance's subscription. Offering the row before that would send
// it to every instance but this one, whose members would then depend on
// a recovery from history to get it.
func (l *Listener) layerBack(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	return l.layer.Check(ctx) == nil
}

// nextHoldWait returns how long to wait before offering a held row
// again: jittered exponential backoff from MinBackoff (at least 50ms),
// capped at MaxBackoff and at maxHoldBackoff.
func (l *Listener) nextHoldWait() time.Duration {
	ceiling := min(l.maxBackoff, maxHoldBackoff)
	if l.holdWait == 0 {
		l.holdWait = max(l.minBackoff, 50*time.Millisecond)
	} else {
		l.holdWait = 2 * l.holdWait
	}
	l.holdWait = max(min(l.holdWait, ceiling), time.Millisecond)
	return l.holdWait/2 + rand.N(l.holdWait/2+1)
}

// pause waits d, reading and discarding the notifications that arrive
// meanwhile: a held row is offered again after its backoff however busy
// the log, and the connection keeps being read.
func (l *Listener) pause(ctx context.Context, conn *pgx.Conn, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		waitCtx, cancel := context.WithDeadline(ctx, deadline)
		_, err := conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				return nil
			}
			return err
		}
	}
}

// resume sets where delivery starts. A Listener that reconnects goes on
// from the last row it delivered, unless the log no longer holds the rows
// after it. A fresh one starts where the layer says the rows were last
// sent (Layer.LastSent), so that rows committed while no instance
// ran reach the group's history and the clients that resume from it; on
// other layers, and when the layer knows nothing, it owes its clients
// nothing older than now and starts at the end of the log.
func (l *Listener) resume(ctx context.Context, conn *pgx.Conn) error {
	var end, pruned int64
	err := conn.QueryRow(ctx, `SELECT greatest((SELECT max(seq) FROM herald_log), pruned_through), pruned_through, epoch
		FROM herald_log_state`).Scan(&end, &pruned, &l.epoch)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	if !l.started {
		l.last, l.started = l.lastSent(ctx, end), true
		if l.last < end {
			l.log.Info("notifier: sending the rows committed since the last one sent", "from_seq", l.last, "log_end", end)
		}
		close(l.begun)
	}
	switch {
	case pruned > l.last:
		l.log.Error("notifier: away longer than the log's retention; rows committed meanwhile were pruned and are not delivered",
			"last_seq", l.last, "pruned_through", pruned, "retention", l.retention)
		l.last = pruned
	case end < l.last:
		l.log.Warn("notifier: the log ends before the last row delivered (restored or truncated?); going on from its end",
			"last_seq", l.last, "log_end", end)
		l.last = end
	}
	return nil
}

// lastSent returns the lowest of the bridges' last sent seqs the layer
// knows, or end if it knows none. Rows after it that some bridge already
// sent are offered again and dropped by the layer.
func (l *Listener) lastSent(ctx context.Context, end int64) int64 {
	if !l.once {
		return end
	}
	from := end
	for _, b := range l.bridges {
		seq, ok, err := l.layer.LastSent(ctx, l.sourceName(b), b.Group)
		if l.noOnce(err) {
			return end
		}
		if err != nil {
			l.log.Warn("notifier: cannot ask the layer where rows were last sent; starting at the end of the log", "err", err)
			return end
		}
		if ok {
			from = min(from, seq)
		}
	}
	return from
}

// wait returns when a notification arrives or the poll interval passes,
// having discarded every notification already received: one read of the
// log answers them all.
func (l *Listener) wait(ctx context.Context, conn *pgx.Conn) error {
	waitCtx, cancel := context.WithTimeout(ctx, l.poll)
	_, err := conn.WaitForNotification(waitCtx)
	cancel()
	// A timeout leaves a pgx connection usable; it means "poll".
	if err != nil && (!pgconn.Timeout(err) || ctx.Err() != nil) {
		return err
	}
	// With a done context, pgx hands out notifications it has already
	// read and then fails without touching the connection.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for {
		if n, _ := conn.WaitForNotification(done); n == nil {
			return nil
		}
	}
}

// catchUp delivers, in seq order and a page at a time, every row of the
// log after the last one delivered. Because seq order is commit order and
// a row is numbered only once every row before it has committed, this
// misses nothing and repeats nothing, whatever the order of inserts.
func (l *Listener) catchUp(ctx context.Context, conn *pgx.Conn) error {
	for {
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		rows, _ := conn.Query(qctx,
			"SELECT seq, source, data FROM herald_log WHERE seq > $1 ORDER BY seq LIMIT $2", l.last, pageSize)
		page, err := pgx.CollectRows(rows, pgx.RowToStructByPos[logEntry])
		cancel()
		if err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		if l.once && l.shared {
			err = l.sendPage(ctx, conn, page)
		} else {
			err = l.deliverAll(ctx, page)
		}
		if err != nil || l.held {
			return err
		}
		if len(page) < pageSize {
			return nil
		}
	}
}

// logEntry is one row of herald_log.
type logEntry struct {
	Seq    int64
	Source string
	Data   []byte
}

// deliverAll delivers the rows of page in order, stopping at a held one.
func (l *Listener) deliverAll(ctx context.Context, page []logEntry) error {
	for _, e := range page {
		if err := l.deliver(ctx, e.Seq, e.Source, e.Data, true); err != nil {
			return err
		}
		if l.held {
			return nil
		}
	}
	return nil
}

// sendPage sends the rows of page, on a layer that sends once, under the
// row locks of this Listener's sources in herald_sent: rows another
// Listener sent already are skipped, and what this one sends is recorded
// there in the same transaction. The layer drops a repeated offer too,
// but its record lives in Redis: one restarted without persistence forgets
// it, and a Listener that was behind would send again rows that reached
// clients before the restart. A row sent whose record then fails to
// commit (Postgres went away) is offered again, and the layer's record
// drops it unless Redis also lost it in the meantime.
func (l *Listener) sendPage(ctx context.Context, conn *pgx.Conn, page []logEntry) error {
	if len(page) == 0 {
		return nil
	}
	// Wait for room before taking the locks, so that a paced Listener
	// does not hold the others up while it waits.
	if l.pace != nil {
		if err := l.pace(ctx); err != nil {
			return fmt.Errorf("pace: %w", err)
		}
	}
	names := make([]string, 0, len(l.bridges))
	for _, b := range l.bridges {
		names = append(names, l.sourceName(b))
	}
	slices.Sort(names) // one order for every Listener: no deadlock
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// A Listener whose send hangs holds the others for at most this long;
	// then they reconnect and try again.
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '30s'`); err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO herald_sent (source) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, names); err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	through := make(map[string]int64, len(names))
	rows, _ := tx.Query(ctx, `SELECT source, through FROM herald_sent WHERE source = ANY($1) ORDER BY source FOR UPDATE`, names)
	var name string
	var seq int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &seq}, func() error { through[name] = seq; return nil }); err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	sent := map[string]int64{}
	paced := l.pace != nil // the first row to send waited above
	for _, e := range page {
		if b, ok := l.bridges[e.Source]; ok {
			if n := l.sourceName(b); e.Seq <= through[n] {
				// Sent by another Listener: a row this one held is settled
				// too, and the probe that let it here says the layer is
				// back.
				l.last = e.Seq
				l.unhold(e.Seq)
				continue
			}
		}
		if err := l.deliver(ctx, e.Seq, e.Source, e.Data, !paced); err != nil {
			return err
		}
		paced = false
		if l.held {
			break
		}
		if b, ok := l.bridges[e.Source]; ok {
			sent[l.sourceName(b)] = e.Seq
		}
	}
	for n, seq := range sent {
		if _, err := tx.Exec(ctx, `UPDATE herald_sent SET through = greatest(through, $2) WHERE source = $1`, n, seq); err != nil {
			return fmt.Errorf("record sends: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("record sends: %w", err)
	}
	return nil
}

// deliver sends one logged row to its bridge's group, after Pace if set.
//
// On a layer that can send once (Layer.GroupSendOnce), every instance offers every
// row, and the first offer sends it to the members of every instance,
// with a history id where the group keeps history: a client that loses
// its instance resumes the rows it missed on another. When the layer
// cannot be reached (ErrUnavailable), the row is held: deliver sets
// l.held and leaves l.last before it, and the session offers it again
// after a backoff, then goes on in order. Nothing reaches a client
// without the id it can resume from, and nothing is lost meanwhile, as
// the log is durable. On other layers each instance delivers every row to
// its own members only (Layer.GroupSendLocal).
//
// A row that cannot be encoded, and a send that fails otherwise, are
// logged and not retried: the row is not lost for good, as it stays in
// its table. deliver returns an error only when Pace fails, ctx ends or
// the layer is closed; the row is then neither sent nor skipped.
func (l *Listener) deliver(ctx context.Context, seq int64, source string, row []byte, pace bool) error {
	b, ok := l.bridges[source]
	if !ok {
		l.last = seq
		l.log.Debug("notifier: skipping a row of a table this instance does not bridge", "table", source, "seq", seq)
		return nil
	}
	msg, err := b.message(row)
	if err != nil {
		l.last = seq
		l.log.Warn("notifier: skipping a row", "err", err, "table", source, "seq", seq, "row", truncate(string(row)))
		return nil
	}
	if pace && l.pace != nil {
		if err := l.pace(ctx); err != nil {
			return fmt.Errorf("pace: %w", err)
		}
	}
	if l.once {
		_, err = l.layer.GroupSendOnce(ctx, l.sourceName(b), seq, b.Group, msg)
	}
	if !l.once || l.noOnce(err) {
		_, err = l.layer.GroupSendLocal(ctx, b.Group, msg)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // not known to be sent: a later Run offers it again
	}
	if errors.Is(err, channellayer.ErrClosed) {
		// Not sent, and not a fault of the row: recording it as done
		// would leave it to nobody. The session ends and offers it again.
		return fmt.Errorf("notifier: row %d: %w", seq, err)
	}
	if l.once && errors.Is(err, channellayer.ErrUnavailable) {
		if !l.held {
			l.log.Warn("notifier: the layer is unreachable; holding rows until it is back",
				"err", err, "table", source, "seq", seq, "group", b.Group)
		}
		l.held = true
		return nil
	}
	l.unhold(seq)
	l.last = seq
	if err != nil && !errors.Is(err, channellayer.ErrNoReceivers) {
		l.log.Warn("notifier: delivery failed", "err", err, "table", source, "seq", seq, "group", b.Group)
	}
	return nil
}

// noOnce reports whether err says the layer cannot send once
// (channellayer.ErrUnsupported), and if so makes the Listener send each
// row locally from then on.
func (l *Listener) noOnce(err error) bool {
	if !errors.Is(err, channellayer.ErrUnsupported) {
		return false
	}
	if l.once {
		l.once = false
		l.log.Info("notifier: the layer cannot send once; each instance delivers every row to its own members")
	}
	return true
}

// unhold ends a hold: the row seq, which was held or follows one that
// was, is settled.
func (l *Listener) unhold(seq int64) {
	if l.held {
		l.held = false
		l.log.Info("notifier: the layer is back; delivering the rows held meanwhile", "from_seq", seq)
	}
}

// sourceName names the rows of bridge b in this log for GroupSendOnce.
func (l *Listener) sourceName(b Bridge) string {
	return "herald_log." + l.epoch + "." + b.Table + "." + b.Group
}

// prune deletes log rows older than the retention that this Listener has
// delivered, a batch at a time, and records the highest seq deleted; and
// the idempotency keys of posts older than IdempotencyLifetime. Every
// Listener prunes; concurrent prunes wait on each other's row locks and
// do not conflict.
func (l *Listener) prune(ctx context.Context, conn *pgx.Conn) error {
	l.lastPrune = time.Now()
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	_, err := conn.Exec(qctx, `WITH gone AS (
			DELETE FROM herald_log WHERE seq IN (
				SELECT seq FROM herald_log WHERE at < now() - $1::interval AND seq <= $3 ORDER BY seq LIMIT $2)
			RETURNING seq)
		UPDATE herald_log_state SET pruned_through = greatest(pruned_through, (SELECT max(seq) FROM gone))
		WHERE EXISTS (SELECT FROM gone)`, l.retention, pruneBatch, l.last)
	if err != nil {
		return fmt.Errorf("prune the log: %w", err)
	}
	_, err = conn.Exec(qctx, `DELETE FROM herald_idempotency WHERE key IN (
			SELECT key FROM herald_idempotency WHERE created_at < now() - $1::interval LIMIT $2)`,
		IdempotencyLifetime, pruneBatch)
	if err != nil {
		return fmt.Errorf("prune the idempotency keys: %w", err)
	}
	return nil
}

// truncate shortens s for a log line.
func truncate(s string) string {
	const limit = 200
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
