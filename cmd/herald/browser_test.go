package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/channellayer/layertest"
)

// startInProcess runs the server in this process with the given flags and
// returns its address; the server stops when the test ends.
func startInProcess(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	// The per-address HTTP and replay limits are off unless the test's
	// flags set them: the tests' clients all come from 127.0.0.1.
	env := func(k string) string {
		if k == "HERALD_HTTP_RATE_LIMIT" || k == "HERALD_REPLAY_RATE" {
			return "0"
		}
		return ""
	}
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0", "-log-level", "warn"}, args...), env, os.Stderr, func(a string) { addr <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(wait):
		t.Fatal("server did not start")
	}
	return ""
}

// browser starts headless Chromium, or skips (fails with
// HERALD_REQUIRE_SERVICES=1) when it is not installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		layertest.Unavailable(t, "Chromium (apt-get install chromium)", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// TestTwoPagesSeeAPost is the README's promise: two tabs open, a post
// written in one appears in both.
func TestTwoPagesSeeAPost(t *testing.T) {
	addr := startInProcess(t)
	ctx := browser(t)
	tab1, cancel1 := chromedp.NewContext(ctx)
	defer cancel1()
	tab2, cancel2 := chromedp.NewContext(ctx)
	defer cancel2()

	url := "http://" + addr + "/"
	for _, tab := range []context.Context{tab1, tab2} {
		// The first run on a tab opens it and binds it to the context it
		// runs with, so it must not carry a timeout.
		if err := chromedp.Do(tab); err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithTimeout(tab, 20*time.Second)
		err := chromedp.Do(tctx,
			chromedp.Navigate(url),
			chromedp.WaitVisible(`#status[data-state="open"]`),
		)
		cancel()
		if err != nil {
			t.Fatalf("opening the page: %v", err)
		}
	}

	const message = "Hello from tab one <b>not bold</b>"
	tctx, cancel := context.WithTimeout(tab1, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx,
		chromedp.SendKeys(`#author`, "Ana"),
		chromedp.SendKeys(`#message`, message),
		chromedp.Click(`#send`),
	); err != nil {
		t.Fatalf("writing the post: %v", err)
	}

	for i, tab := range []context.Context{tab1, tab2} {
		tctx, cancel := context.WithTimeout(tab, 20*time.Second)
		err := chromedp.Do(tctx, chromedp.WaitVisible(`#feed [data-post-id] .message`))
		if err != nil {
			cancel()
			t.Fatalf("tab %d: waiting for the post: %v", i+1, err)
		}
		author, err1 := chromedp.Run(tctx, chromedp.Text(`#feed [data-post-id] .author`))
		text, err2 := chromedp.Run(tctx, chromedp.Text(`#feed [data-post-id] .message`))
		count, err3 := chromedp.Run(tctx, chromedp.Evaluate[int](`document.querySelectorAll('#feed [data-post-id]').length`))
		cancel()
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("tab %d: reading the post: %v", i+1, err)
		}
		if strings.TrimSpace(author) != "Ana" || strings.TrimSpace(text) != message || count != 1 {
			t.Fatalf("tab %d shows author %q, message %q, %d posts", i+1, author, text, count)
		}
	}
}
