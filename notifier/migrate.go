package notifier

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channel is the Postgres notification channel the posts trigger notifies
// and the Listener listens to.
const Channel = "herald_posts"

// migrateLockKey names the advisory lock that serializes Migrate across
// instances. Any constant works as long as nothing else in the database
// uses it; this one spells "herald" in ASCII.
const migrateLockKey int64 = 0x68657261_6c64

// maxPayloadBytes is the largest row payload the trigger sends whole.
// NOTIFY refuses payloads of 8000 bytes or more; the margin leaves room
// for the server's encoding.
const maxPayloadBytes = 7900

// migration is run in one transaction after taking the advisory lock:
// without the lock, two instances starting together can both pass "IF NOT
// EXISTS" and then fail on the catalog's unique indexes, or fail with
// "tuple concurrently updated" when replacing the function.
var migration = fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS posts (
	id         bigserial PRIMARY KEY,
	author     text NOT NULL,
	message    text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION herald_notify_post() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	payload text;
BEGIN
	-- created_at is formatted in UTC by hand so the payload does not
	-- depend on the inserting session's TimeZone or DateStyle.
	payload := json_build_object(
		'id', NEW.id,
		'author', NEW.author,
		'message', NEW.message,
		'created_at', to_char(NEW.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
	)::text;
	IF octet_length(payload) >= %[1]d THEN
		-- Too big to notify: the listener reads the row by id.
		payload := json_build_object('id', NEW.id)::text;
	END IF;
	PERFORM pg_notify('%[2]s', payload);
	RETURN NULL;
END
$$;

-- Dropped and created again so that a changed definition replaces an old
-- one; the transaction and the advisory lock hide the gap.
DROP TRIGGER IF EXISTS herald_posts_notify ON posts;
CREATE TRIGGER herald_posts_notify
	AFTER INSERT ON posts
	FOR EACH ROW EXECUTE FUNCTION herald_notify_post();
`, maxPayloadBytes, Channel)

// Migrate creates the posts table and its notify trigger if they are
// missing, and replaces the trigger and its function otherwise. It is
// safe to run from several instances at once: they take turns on an
// advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, migration)
		return err
	})
	if err != nil {
		return fmt.Errorf("notifier: migrate: %w", err)
	}
	return nil
}
