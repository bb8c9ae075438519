package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// scrapeGo reads the Go runtime's gauges from the server's /metrics:
// how much of its memory is goroutine stacks and how much heap; and how
// many channels Herald has registered, which a connection gone should
// have given back.
func scrapeGo(base string) map[string]float64 {
	want := []string{"go_goroutines", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes",
		"go_memstats_heap_alloc_bytes", "go_memstats_sys_bytes", "go_memstats_heap_objects", "herald_channels"}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(base + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, w := range want {
			if name == w {
				if v, err := strconv.ParseFloat(val, 64); err == nil {
					out[w] = v
				}
			}
		}
	}
	return out
}

// runConns serves the idle and connect scenarios: open n connections,
// optionally at a set rate, hold them, and report the connect rate and
// the server's memory per connection.
func runConns(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var c common
	c.register(fs)
	n := fs.Int("n", 10000, "connections to open")
	rate := fs.Float64("rate", 0, "connections per second in all (0: as fast as the client can)")
	holdDef := 30 * time.Second
	if name == "connect" {
		holdDef = 0
	}
	hold := fs.Duration("hold", holdDef, "how long to hold the connections open before measuring and closing them (a ping interval is 25s by default)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *n > 200000 {
		return fmt.Errorf("-n: want 1 to 200000")
	}
	if *hold > 10*time.Minute {
		return fmt.Errorf("-hold: at most 10m")
	}
	if err := c.check(*n); err != nil {
		return err
	}
	fl, err := spawn(fleetConfig{n: *n, procs: c.procs, urls: c.wsURLs, srcs: c.srcs(*n), conc: c.conc, rate: *rate,
		timeout: c.timeout, reader: c.reader, maxTime: c.connLimit + *hold + time.Minute})
	if err != nil {
		return err
	}
	defer fl.kill()

	rss0, _ := c.servers.rss()
	cpu0, _ := c.servers.cpu()
	evs, err := fl.connect(c.connLimit)
	if err != nil {
		fl.stop()
		return err
	}
	cs := sumConnect(evs)
	cpu1, _ := c.servers.cpu()
	rssConnected, _ := c.servers.rss()
	peak := rssConnected
	if *hold > 0 {
		tick := time.NewTicker(time.Second)
		end := time.After(*hold)
	holding:
		for {
			select {
			case <-tick.C:
				if r, err := c.servers.rss(); err == nil {
					peak = max(peak, r)
				}
			case <-end:
				break holding
			}
		}
		tick.Stop()
	}
	rss1, _ := c.servers.rss()
	peak = max(peak, rss1)
	goMetrics := scrapeGo(c.httpBase())
	_, open := fl.progress()
	ds := sumDone(fl.stop())
	closed, clientCPU := ds.closed, ds.cpu

	lat := cs.lat.Summary()
	rec := map[string]any{
		"scenario": name, "n": *n, "procs": c.procs, "sources": len(c.srcs(*n)), "rate_asked": *rate,
		"ok": cs.ok, "failed": cs.failed, "connect_s": round(cs.seconds, 3),
		"conns_per_s": round(float64(cs.ok)/cs.seconds, 0), "handshake": lat,
		"hold_s": hold.Seconds(), "open_at_end": open, "closed_by_server": closed,
		"client_cpu_s": round(clientCPU, 2),
	}
	summary := fmt.Sprintf("%s: %d/%d connected in %.2fs = %.0f conn/s, handshake p50 %.1fms p99 %.1fms max %.1fms, failed %v",
		name, cs.ok, *n, cs.seconds, float64(cs.ok)/cs.seconds, lat.P50, lat.P99, lat.MaxMS, cs.failed)
	if len(c.servers) > 0 && cs.ok > 0 {
		per := float64(rss1-rss0) / float64(cs.ok) / 1024
		perPeak := float64(peak-rss0) / float64(cs.ok) / 1024
		rec["rss_before_mb"] = round(float64(rss0)/(1<<20), 1)
		rec["rss_connected_mb"] = round(float64(rssConnected)/(1<<20), 1)
		rec["rss_end_mb"] = round(float64(rss1)/(1<<20), 1)
		rec["rss_peak_mb"] = round(float64(peak)/(1<<20), 1)
		rec["kb_per_conn"] = round(per, 2)
		rec["kb_per_conn_peak"] = round(perPeak, 2)
		rec["server_cpu_connect_s"] = round(cpu1-cpu0, 2)
		summary += fmt.Sprintf("; server RSS %.1f -> %.1f MiB (peak %.1f): %.2f KB/conn (peak %.2f); server CPU while connecting %.2fs",
			float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(peak)/(1<<20), per, perPeak, cpu1-cpu0)
	}
	if len(goMetrics) > 0 && cs.ok > 0 {
		rec["server_go"] = goMetrics
		summary += fmt.Sprintf("; server Go runtime at end: %.2f goroutines/conn, stacks %.2f KB/conn, heap in use %.2f KB/conn",
			goMetrics["go_goroutines"]/float64(cs.ok), goMetrics["go_memstats_stack_inuse_bytes"]/float64(cs.ok)/1024,
			goMetrics["go_memstats_heap_inuse_bytes"]/float64(cs.ok)/1024)
	}
	if len(closed) > 0 {
		summary += fmt.Sprintf("; closed by server while held: %v", closed)
	}
	return c.report(summary, rec)
}
