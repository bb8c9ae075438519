package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/channellayer/layertest"
	"github.com/heraldhq/herald/notifier/pgtest"
)

// pageRestartCase is one way of running TestPageAcrossRestart.
type pageRestartCase struct {
	// env is the environment of the instance that serves the page and is
	// restarted.
	env []string
	// write commits post number i and returns its id.
	write func(ctx context.Context, i int) (int64, error)
	// quietWhileStarting pauses the writer from the moment the stopped
	// instance is started again until it is ready. With Postgres, a fresh
	// instance serves the page before its notifier has fixed where in the
	// log it starts, and a row committed in between reaches neither the
	// page's reload nor the stream (a server race, not the page's).
	quietWhileStarting bool
	// noWebSocket removes WebSocket from the page, so that herald.js uses an
	// event stream.
	noWebSocket bool
}

// TestPageAcrossRestart opens the page, then stops the instance serving it
// and starts it again on the same address while posts are written
// throughout, some while nothing serves the page. In the end the page shows
// every committed post exactly once, in order, whichever way the server
// accounts for the gap: a replay of the history when the page resumes, a
// resync after which the page reloads GET /posts, or, for a page that saw
// no history id, a reload when it reconnects.
//
//   - memory layer and Postgres: the history died with the process, so the
//     resuming page must be told to resync;
//   - Redis layer and Postgres: the posts committed while no instance ran
//     must come back through the history or a resync;
//   - Redis layer, posts through a second instance that stays up: they are
//     group sends kept in the Redis history, and the restarted instance
//     knows none of them (its GET /posts is empty), so only resuming with
//     ?since= brings them back, over a WebSocket or an event stream.
func TestPageAcrossRestart(t *testing.T) {
	t.Run("memory layer and Postgres", func(t *testing.T) {
		db := pgtest.NewDatabase(t)
		testPageAcrossRestart(t, pageRestartCase{
			env:                []string{"DATABASE_URL=" + db},
			write:              pageInsertPosts(t, db),
			quietWhileStarting: true,
		})
	})
	t.Run("Redis layer and Postgres", func(t *testing.T) {
		ru := redisURL(t)
		db := pgtest.NewDatabase(t)
		testPageAcrossRestart(t, pageRestartCase{
			env:                []string{"REDIS_URL=" + ru, "HERALD_REDIS_PREFIX=" + layertest.Prefix(t), "DATABASE_URL=" + db},
			write:              pageInsertPosts(t, db),
			quietWhileStarting: true,
		})
	})
	for _, sse := range []bool{false, true} {
		name := "Redis layer, resume over a WebSocket"
		if sse {
			name = "Redis layer, resume over an event stream"
		}
		t.Run(name, func(t *testing.T) {
			env := []string{"REDIS_URL=" + redisURL(t), "HERALD_REDIS_PREFIX=" + layertest.Prefix(t)}
			other := startHerald(t, env...)
			other.waitReady(t)
			testPageAcrossRestart(t, pageRestartCase{env: env, write: pagePostPosts(other.addr), noWebSocket: sse})
		})
	}
}

// pageInsertPosts writes posts as any backend would: rows in Postgres.
func pageInsertPosts(t *testing.T, db string) func(context.Context, int) (int64, error) {
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return func(ctx context.Context, i int) (int64, error) {
		var id int64
		err := conn.QueryRow(ctx, "INSERT INTO posts (author, message) VALUES ('writer', $1) RETURNING id", pagePostText(i)).Scan(&id)
		return id, err
	}
}

// pagePostPosts writes posts through the HTTP API of the instance at addr.
func pagePostPosts(addr string) func(context.Context, int) (int64, error) {
	return func(ctx context.Context, i int) (int64, error) {
		body, _ := json.Marshal(map[string]string{"author": "writer", "message": pagePostText(i)})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/posts", strings.NewReader(string(body)))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var p struct{ ID int64 }
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusCreated {
			return 0, fmt.Errorf("POST /posts: %d %v", resp.StatusCode, err)
		}
		return p.ID, nil
	}
}

func pagePostText(i int) string { return fmt.Sprint("post ", i) }

// pageWriter commits posts in the background, a few milliseconds apart, as
// many as the test has allowed, and hands each one to the test as it
// commits. The test allows a batch, then stops or starts a server while the
// batch is being written.
type pageWriter struct {
	allowed   chan struct{} // one token per post the writer may write
	committed chan string   // "id message" of each post, in commit order
	stop      chan struct{}
	failed    chan error
}

func startPageWriter(t *testing.T, write func(context.Context, int) (int64, error)) *pageWriter {
	w := &pageWriter{
		allowed:   make(chan struct{}, 1000),
		committed: make(chan string, 1000),
		stop:      make(chan struct{}),
		failed:    make(chan error, 1),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-w.allowed:
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			id, err := write(ctx, i)
			cancel()
			if err != nil {
				w.failed <- fmt.Errorf("writing post %d: %w", i, err)
				return
			}
			w.committed <- fmt.Sprintf("%d %s", id, pagePostText(i))
		}
	}()
	t.Cleanup(func() {
		close(w.stop)
		<-done
	})
	return w
}

// allow lets the writer write n more posts.
func (w *pageWriter) allow(n int) {
	for range n {
		w.allowed <- struct{}{}
	}
}

// take waits for n more posts to commit and appends them to posts.
func (w *pageWriter) take(t *testing.T, posts []string, n int) []string {
	t.Helper()
	timeout := time.After(wait)
	for range n {
		select {
		case p := <-w.committed:
			posts = append(posts, p)
		case err := <-w.failed:
			t.Fatal(err)
		case <-timeout:
			t.Fatalf("writer stalled after %d posts", len(posts))
		}
	}
	return posts
}

// pageFeedJS lists the posts the page shows, top to bottom, as "id message".
const pageFeedJS = `Array.from(document.querySelectorAll('#feed [data-post-id]'),
	(li) => li.dataset.postId + ' ' + li.querySelector('.message').textContent)`

func testPageAcrossRestart(t *testing.T, tc pageRestartCase) {
	served := startHerald(t, tc.env...)
	served.waitReady(t)
	tab := browser(t)
	if tc.noWebSocket {
		if _, err := chromedp.Call(tab, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: "delete window.WebSocket;"}); err != nil {
			t.Fatal(err)
		}
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	step("opening the page", chromedp.Navigate("http://"+served.addr+"/"), chromedp.WaitVisible(`#status[data-state="open"]`))
	if tc.noWebSocket {
		ctx, cancel := context.WithTimeout(tab, 20*time.Second)
		ws, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof WebSocket !== 'undefined'`))
		cancel()
		if err != nil || ws {
			t.Fatalf("WebSocket still defined in the page (%v)", err)
		}
	}

	const batch = 15
	w := startPageWriter(t, tc.write)
	w.allow(batch)
	posts := w.take(t, nil, batch) // to the connected page
	w.allow(batch)
	served.stop(t, os.Interrupt) // while the batch is being written
	posts = w.take(t, posts, batch)
	w.allow(batch)
	posts = w.take(t, posts, batch) // while nothing serves the page
	if !tc.quietWhileStarting {
		w.allow(batch)
	}
	restarted := startHerald(t, append(tc.env, "HERALD_ADDR="+served.addr)...)
	restarted.waitReady(t)
	if tc.quietWhileStarting {
		w.allow(batch)
	}
	posts = w.take(t, posts, batch) // while the instance starts, or just after
	w.allow(batch)
	posts = w.take(t, posts, batch) // to the page, reconnected or about to be

	// The feed is newest first.
	want := slices.Clone(posts)
	slices.Reverse(want)
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.PollFunction[bool](
		`(want) => JSON.stringify(`+pageFeedJS+`) === JSON.stringify(want)`,
		chromedp.WithPollingArgs(want), chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(50*time.Second)))
	if err != nil {
		rctx, rcancel := context.WithTimeout(tab, 5*time.Second)
		defer rcancel()
		got, rerr := chromedp.Run(rctx, chromedp.Evaluate[[]string](pageFeedJS))
		status, _ := chromedp.Run(rctx, chromedp.Evaluate[string](`document.getElementById('status').dataset.state`))
		t.Fatalf("the page (status %q) does not show the %d committed posts once each, in order (%v; reading the feed: %v)\n%s",
			status, len(want), err, rerr, pageFeedDiff(got, want))
	}
	t.Logf("the page shows all %d posts, at least %d of them written while nothing served it", len(want), batch)
}

// pageFeedDiff describes how the feed got differs from want.
func pageFeedDiff(got, want []string) string {
	var b strings.Builder
	seen := make(map[string]int)
	for _, p := range got {
		seen[p]++
	}
	for _, p := range want {
		switch seen[p] {
		case 0:
			fmt.Fprintf(&b, "missing: %s\n", p)
		case 1:
		default:
			fmt.Fprintf(&b, "shown %d times: %s\n", seen[p], p)
		}
		delete(seen, p)
	}
	for p := range seen {
		fmt.Fprintf(&b, "not committed: %s\n", p)
	}
	if b.Len() == 0 {
		fmt.Fprintf(&b, "same posts, other order:\n got %q\nwant %q\n", got, want)
	}
	return b.String()
}
