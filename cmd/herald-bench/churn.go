package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// runChurn measures connections that come and go: -n held open while
// -rate of them a second are closed and dialled again, as browsers
// leave and arrive, and whether the server gives back what each one
// took: goroutines, heap, channels and RSS before, during and after.
func runChurn(args []string) error {
	fs := flag.NewFlagSet("churn", flag.ContinueOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 1000, "connections held open")
	rate := fs.Float64("rate", 500, "connections closed and replaced per second, in all")
	dur := fs.Duration("duration", 20*time.Second, "how long to churn")
	abrupt := fs.Float64("abrupt", 0.1, "fraction of the closes made without a close frame, as by a browser that vanishes")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *n <= 0 || *n > 200000:
		return fmt.Errorf("-n: want 1 to 200000")
	case *abrupt < 0 || *abrupt > 1:
		return fmt.Errorf("-abrupt: want 0 to 1")
	}
	if err := checkPace(*rate, *dur); err != nil {
		return err
	}
	if err := c.check(*n); err != nil {
		return err
	}
	// A replacement still dialling when the churn ends may take up to a
	// dial timeout.
	churnLimit := *dur + c.timeout + 30*time.Second
	fl, err := spawn(fleetConfig{n: *n, procs: c.procs, urls: c.wsURLs, srcs: c.srcs(*n), conc: c.conc,
		timeout: c.timeout, reader: c.reader, maxTime: c.connLimit + churnLimit + time.Minute,
		churnRate: *rate, churnFor: *dur, abrupt: *abrupt})
	if err != nil {
		return err
	}
	defer fl.kill()

	before := c.serverState()
	evs, err := fl.connect(c.connLimit)
	if err != nil {
		fl.stop()
		return err
	}
	cs := sumConnect(evs)
	if cs.ok == 0 {
		fl.stop()
		return fmt.Errorf("no connection opened: %v", cs.failed)
	}
	opened := c.serverState()
	cpu0, _ := c.servers.cpu()
	churned, err := fl.churn(churnLimit)
	if err != nil {
		fl.stop()
		return err
	}
	cpu1, _ := c.servers.cpu()
	after := c.serverState()
	ch := sumConnect(churned)
	closes := map[string]int64{}
	var skipped, openAtEnd int64
	for _, e := range churned {
		for k, v := range e.Closes {
			closes[k] += v
		}
		skipped += e.Skipped
		openAtEnd += e.Open
	}
	done := fl.stop()
	ds := sumDone(done)
	closedByServer, clientCPU := ds.closed, ds.cpu
	settled, settleTime := c.settle(before.Goroutines, 10*time.Second)

	lat := ch.lat.Summary()
	achieved := 0.0
	if ch.seconds > 0 {
		achieved = float64(ch.ok) / ch.seconds
	}
	rec := map[string]any{
		"scenario": "churn", "n": *n, "procs": c.procs, "sources": len(c.srcs(*n)), "rate_asked": *rate,
		"duration_s": dur.Seconds(), "abrupt_asked": *abrupt,
		"connected": cs.ok, "connect_failed": cs.failed,
		"reconnects": ch.ok, "failed": ch.failed, "skipped": skipped, "closes": closes,
		"churn_s": round(ch.seconds, 3), "reconnects_per_s": round(achieved, 1), "connect": lat,
		"open_at_end": openAtEnd, "closed_by_server": closedByServer, "client_cpu_s": round(clientCPU, 2),
		"server":   map[string]serverState{"before_open": before, "before_churn": opened, "after_churn": after, "after_close": settled},
		"settle_s": round(settleTime.Seconds(), 2),
	}
	summary := fmt.Sprintf("churn: %d/%d open, then %d reconnects in %.1fs = %.0f/s (asked %.0f/s; %d normal closes, %d abrupt), failed %v, %d open at end; reconnect p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms",
		cs.ok, *n, ch.ok, ch.seconds, achieved, *rate, closes["normal"], closes["abrupt"], ch.failed, openAtEnd,
		lat.P50, lat.P90, lat.P99, lat.MaxMS)
	if skipped > 0 {
		summary += fmt.Sprintf(", %d skipped (slot still busy)", skipped)
	}
	if len(c.servers) > 0 {
		cpu := cpu1 - cpu0
		rec["server_cpu_s"] = round(cpu, 2)
		summary += fmt.Sprintf("; server CPU %.2fs", cpu)
		if ch.ok > 0 {
			rec["server_cpu_ms_per_reconnect"] = round(cpu/float64(ch.ok)*1000, 3)
			summary += fmt.Sprintf(" = %.3fms per reconnect", cpu/float64(ch.ok)*1000)
		}
		summary += fmt.Sprintf("; server RSS %.1f -> %.1f -> %.1f -> %.1f MiB", before.RSSMB, opened.RSSMB, after.RSSMB, settled.RSSMB)
	}
	summary += fmt.Sprintf("; goroutines %.0f -> %.0f -> %.0f -> %.0f (settled in %.1fs), heap in use %.1f -> %.1f -> %.1f -> %.1f MiB, channels %.0f -> %.0f -> %.0f -> %.0f (before open -> before churn -> after churn -> after close)",
		before.Goroutines, opened.Goroutines, after.Goroutines, settled.Goroutines, settleTime.Seconds(),
		before.HeapMB, opened.HeapMB, after.HeapMB, settled.HeapMB,
		before.Channels, opened.Channels, after.Channels, settled.Channels)
	if len(closedByServer) > 0 {
		summary += fmt.Sprintf("; closed by server: %v", closedByServer)
	}
	return c.report(summary, rec)
}

// serverState is what a run samples of the servers to tell whether
// connections that have gone left something behind: RSS over the
// -server-pid processes, and the gauges of /metrics summed over the
// servers of -url.
type serverState struct {
	RSSMB      float64 `json:"rss_mb,omitempty"`
	Goroutines float64 `json:"goroutines"`
	HeapMB     float64 `json:"heap_inuse_mb"`
	Channels   float64 `json:"channels"`
}

func (c *common) serverState() serverState {
	var s serverState
	if rss, err := c.servers.rss(); err == nil {
		s.RSSMB = round(float64(rss)/(1<<20), 1)
	}
	seen := map[string]bool{}
	for _, w := range c.wsURLs {
		u, _ := url.Parse(w)
		if seen[u.Host] {
			continue
		}
		seen[u.Host] = true
		m := scrapeGo("http://" + u.Host)
		s.Goroutines += m["go_goroutines"]
		s.HeapMB += m["go_memstats_heap_inuse_bytes"] / (1 << 20)
		s.Channels += m["herald_channels"]
	}
	s.HeapMB = round(s.HeapMB, 1)
	return s
}

// settle samples the servers after the connections closed until their
// goroutines are back to floor or have not fallen for a second, for at
// most limit: a server tears a connection down after the client has gone.
// It returns the last sample and how long the wait was.
func (c *common) settle(floor float64, limit time.Duration) (serverState, time.Duration) {
	start := time.Now()
	s := c.serverState()
	lowest, fell := s.Goroutines, start
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for now := range tick.C {
		if s.Goroutines <= floor || now.Sub(fell) > time.Second || now.Sub(start) > limit {
			break
		}
		s = c.serverState()
		if s.Goroutines < lowest {
			lowest, fell = s.Goroutines, now
		}
	}
	return s, time.Since(start)
}

// churn replaces the child's connections for cfg.churnFor at
// cfg.churnRate a second, round-robin over its slots so that every
// connection lives about as long: each is closed (the fraction
// cfg.abrupt of them without a close frame) and then dialled again. It
// reports a churned event.
func (c *child) churn(ctx context.Context) {
	n := c.cfg.n
	var total int64
	if n > 0 {
		total = int64(math.Round(c.cfg.churnRate * c.cfg.churnFor.Seconds()))
	}
	var (
		next    atomic.Int64
		ok      atomic.Int64
		skipped atomic.Int64
		mu      sync.Mutex
		failed  = map[string]int64{}
		closes  = map[string]int64{}
		connect hist
		// busy marks the slots being replaced: a replacement slower
		// than a round over all the slots must not meet the next.
		busy = make([]atomic.Bool, n)
		wg   sync.WaitGroup
	)
	start := time.Now()
	for w := int64(0); w < min(int64(c.cfg.conc), total); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= total || ctx.Err() != nil {
					return
				}
				due := start.Add(time.Duration(float64(k) / c.cfg.churnRate * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					time.Sleep(d) // pacing the churn, not synchronising
				}
				i := int(k % int64(n))
				if !busy[i].CompareAndSwap(false, true) {
					skipped.Add(1)
					continue
				}
				kind := "normal"
				if abruptAt(k, c.cfg.abrupt) {
					kind = "abrupt"
				}
				closed := c.drop(i, kind == "abrupt")
				d, err := c.dial(ctx, i)
				busy[i].Store(false)
				if err == nil {
					connect.Record(d)
					ok.Add(1)
				}
				mu.Lock()
				if closed {
					closes[kind]++
				}
				if err != nil {
					failed[failCause(err)]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	hd := connect.Data()
	c.emit(event{Ev: "churned", OK: ok.Load(), Failed: failed, Closes: closes, Skipped: skipped.Load(),
		StartNS: start.UnixNano(), EndNS: end.UnixNano(), Connect: &hd})
}

// abruptAt tells whether the k-th close of a churn is abrupt, so that
// the fraction f of any run of closes is, spread evenly.
func abruptAt(k int64, f float64) bool {
	return int64(float64(k+1)*f) > int64(float64(k)*f)
}

// drop closes connection i from the client's side: with a normal close
// (code 1000), or, abrupt, by closing the socket alone, as a browser
// that vanishes does. It reports whether the slot held a connection; with
// the goroutine reader that may be one the server has just closed.
func (c *child) drop(i int, abrupt bool) bool {
	if c.ep != nil {
		return c.ep.drop(i, abrupt)
	}
	ws := c.conns[i]
	if ws == nil {
		return false
	}
	c.conns[i] = nil
	ws.dropped.Store(true)
	if abrupt {
		ws.nc.Close()
	} else {
		ws.close()
	}
	return true
}
