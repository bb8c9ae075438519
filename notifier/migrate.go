package notifier

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channel is the Postgres notification channel the log trigger notifies
// and the Listener listens to. A notification only says "the log grew";
// its payload is empty and ignored.
const Channel = "herald_log"

// migrateLockKey names the advisory lock that serializes Migrate across
// instances. Any constant works as long as nothing else in the database
// uses it; this one spells "herald" in ASCII.
const migrateLockKey int64 = 0x68657261_6c64

// commitLockKey names the transaction-level advisory lock the log trigger
// takes before numbering a row. It is held until the transaction ends,
// so rows are numbered in commit order ("heraldc" in ASCII).
const commitLockKey int64 = 0x68657261_6c6463

// triggerName is the trigger Migrate installs on every bridged table.
const triggerName = "herald_log_row"

// schema creates the posts table, the log and the trigger function. It
// runs in one transaction after taking the advisory lock: without the
// lock, two instances starting together can both pass "IF NOT EXISTS" and
// then fail on the catalog's unique indexes, or fail with "tuple
// concurrently updated" when replacing the function. %[1]s is the schema
// the log lives in, quoted.
const schema = `
CREATE TABLE IF NOT EXISTS posts (
	id         bigserial PRIMARY KEY,
	author     text NOT NULL,
	message    text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per inserted row of a bridged table, numbered in commit order.
CREATE TABLE IF NOT EXISTS herald_log (
	seq    bigserial PRIMARY KEY,
	source text NOT NULL,
	data   jsonb NOT NULL,
	at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS herald_log_at ON herald_log (at);

-- pruned_through is the highest seq pruned, so that a Listener that was
-- away longer than the retention can tell what it missed. epoch names
-- this log among every log that ever shared the channel layer: the
-- instances offer each row to the layer under it, and a log made anew
-- (its seqs starting again from 1) must not pass for one already sent.
CREATE TABLE IF NOT EXISTS herald_log_state (
	singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	pruned_through bigint NOT NULL DEFAULT 0
);
ALTER TABLE herald_log_state ADD COLUMN IF NOT EXISTS epoch text NOT NULL DEFAULT gen_random_uuid()::text;
INSERT INTO herald_log_state DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The highest seq of each source (a bridge of one log epoch) that some
-- Listener has sent to the layer. A Listener takes the row lock of its
-- sources for each page it sends and skips what another already sent, so
-- that a row is sent once even when the layer loses its own record (a
-- Redis restarted without persistence) while Listeners are at different
-- points of the log.
CREATE TABLE IF NOT EXISTS herald_sent (
	source  text PRIMARY KEY,
	through bigint NOT NULL DEFAULT 0
);

-- The idempotency keys of POST /posts, each written in the transaction of
-- the post it created and pruned by the Listeners after a day.
CREATE TABLE IF NOT EXISTS herald_idempotency (
	key          text PRIMARY KEY,
	request_hash bytea NOT NULL,
	post_id      bigint,
	created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS herald_idempotency_created_at ON herald_idempotency (created_at);

-- Runs as a deferred constraint trigger, so at commit. The advisory lock
-- is held until the transaction ends: no other transaction can number a
-- row until this one has committed (or rolled back), so seq order is
-- commit order, and a reader that sees seq N sees every committed seq
-- below N. The empty notification folds into one per transaction.
CREATE OR REPLACE FUNCTION herald_log_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(%[2]d);
	INSERT INTO %[1]s.herald_log (source, data) VALUES (TG_ARGV[0], to_jsonb(NEW));
	PERFORM pg_notify('%[3]s', '');
	RETURN NULL;
END
$$;

-- The trigger of earlier versions, which sent rows in the payload.
DROP TRIGGER IF EXISTS herald_posts_notify ON posts;
DROP FUNCTION IF EXISTS herald_notify_post();
`

// installTrigger (re)creates the trigger on one table; %[1]s is the
// quoted table, %[2]s the source name as a quoted literal. Dropping and
// creating again lets a changed definition replace an old one; the
// transaction and the advisory lock hide the gap.
const installTrigger = `
DROP TRIGGER IF EXISTS ` + triggerName + ` ON %[1]s;
CREATE CONSTRAINT TRIGGER ` + triggerName + `
	AFTER INSERT ON %[1]s
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION herald_log_row(%[2]s);
`

// Migrate creates the posts table, the log and the table of idempotency
// keys (herald_idempotency) if they are missing, and
// (re)installs the log trigger on the table of each bridge; with no
// bridges, on posts (PostsBridge). Bridged tables other than posts must
// exist. It is safe to run from several instances at once: they take
// turns on an advisory lock. A trigger on a table no longer bridged is
// left in place (drop it with DROP TRIGGER herald_log_row ON table).
func Migrate(ctx context.Context, pool *pgxpool.Pool, bridges ...Bridge) error {
	bridges, err := validateBridges(bridges)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
			return err
		}
		// The function names the log's schema, so that it finds the log
		// whatever the search_path of the inserting session.
		var logSchema string
		if err := tx.QueryRow(ctx, "SELECT current_schema()").Scan(&logSchema); err != nil {
			return err
		}
		sql := fmt.Sprintf(schema, pgx.Identifier{logSchema}.Sanitize(), commitLockKey, Channel)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return err
		}
		for _, b := range bridges {
			sql := fmt.Sprintf(installTrigger, quoteTable(b.Table), quoteLiteral(b.Table))
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("install trigger on %s: %w", b.Table, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("notifier: migrate: %w", err)
	}
	return nil
}

// quoteTable quotes a table validated by validTable.
func quoteTable(table string) string {
	return pgx.Identifier(strings.Split(table, ".")).Sanitize()
}

// quoteLiteral quotes s as an SQL string literal. Tables reach it only
// after validTable, so this is a second line of defence.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
