package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/channellayer"
)

// runFanout measures one group's fan-out: subscribers connected, a
// publisher at a fixed rate through the HTTP API or straight into Redis
// (as a Go backend with Herald's layer would), every message stamped
// with its send time.
func runFanout(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	var c common
	c.register(fs)
	subs := fs.Int("subs", 1000, "subscribers")
	rate := fs.Float64("rate", 1000, "messages per second to publish")
	dur := fs.Duration("duration", 10*time.Second, "how long to publish")
	group := fs.String("group", "gossip", "group to publish to (the subscribers at /notifications/ join gossip)")
	workers := fs.Int("publishers", 8, "concurrent HTTP publishers")
	size := fs.Int("size", 150, "approximate size of each message in bytes")
	grace := fs.Duration("grace", 10*time.Second, "longest wait for deliveries after the last publish")
	token := fs.String("api-token", "", "API token, if the server needs one (HERALD_API_TOKEN)")
	via := fs.String("via", "http", "publish through the server's HTTP API (http) or into Redis with Herald's Redis layer (redis; the servers must share that Redis and prefix)")
	redisURL := fs.String("redis-url", orEnv("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis to publish into, with -via redis (loopback only; default $REDIS_URL)")
	redisPrefix := fs.String("redis-prefix", orEnv("HERALD_REDIS_PREFIX", "herald"), "the servers' HERALD_REDIS_PREFIX, with -via redis (default $HERALD_REDIS_PREFIX)")
	history := fs.String("history", "gossip:1000:1h", "the servers' HERALD_HISTORY, with -via redis: a group with history gets ids when it is published to")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *subs <= 0 || *subs > 200000 {
		return fmt.Errorf("-subs: want 1 to 200000")
	}
	if err := checkPace(*rate, *dur); err != nil {
		return err
	}
	if err := c.check(*subs); err != nil {
		return err
	}
	if *token == "" {
		*token = getenv("HERALD_API_TOKEN")
	}
	pub := &publisher{size: *size}
	switch *via {
	case "http":
		pub.send = httpSender(c.httpBase()+"/api/groups/"+*group+"/send", *token, *workers)
	case "redis":
		policies, err := channellayer.ParseHistory(*history)
		if err != nil {
			return fmt.Errorf("-history: %w", err)
		}
		layer, closeRedis, err := openRedis(*redisURL, channellayer.RedisConfig{Prefix: *redisPrefix, History: policies})
		if err != nil {
			return err
		}
		defer closeRedis()
		pub.send = layerSender(layer, *group)
	default:
		return fmt.Errorf("-via: want http or redis, not %q", *via)
	}
	fl, err := spawn(fleetConfig{n: *subs, procs: c.procs, urls: c.wsURLs, srcs: c.srcs(*subs), conc: c.conc,
		timeout: c.timeout, reader: c.reader, maxTime: c.connLimit + *dur + *grace + time.Minute})
	if err != nil {
		return err
	}
	defer fl.kill()
	evs, err := fl.connect(c.connLimit)
	if err != nil {
		fl.stop()
		return err
	}
	cs := sumConnect(evs)
	if cs.ok == 0 {
		fl.stop()
		return fmt.Errorf("no subscriber connected: %v", cs.failed)
	}

	cpu0, _ := c.servers.cpu()
	w0, werr := c.servers.writes()
	mb0, mt0 := machineCPU()
	start := time.Now()
	pub.run(*rate, *dur, *workers)
	pubEnd := time.Now()
	want := uint64(pub.ok.Load()) * uint64(cs.ok)

	// Wait for the deliveries to arrive: until all have, or none arrived
	// for two seconds, or the grace period ends.
	var recv uint64
	lastChange, lastRecv := time.Now(), uint64(0)
	deadline := pubEnd.Add(*grace)
	tick := time.NewTicker(50 * time.Millisecond)
	for now := range tick.C {
		recv, _ = fl.progress()
		if recv != lastRecv {
			lastChange, lastRecv = now, recv
		}
		if recv >= want || now.Sub(lastChange) > 2*time.Second || now.After(deadline) {
			break
		}
	}
	tick.Stop()
	drained := lastChange
	cpu1, _ := c.servers.cpu()
	w1, _ := c.servers.writes()
	mb1, mt1 := machineCPU()
	ds := sumDone(fl.stop())
	recv, closed, clientCPU := ds.recv, ds.closed, ds.cpu
	window := drained.Sub(start).Seconds()
	if window < dur.Seconds() {
		window = dur.Seconds()
	}
	loss := 0.0
	if want > 0 && recv < want {
		loss = float64(want-recv) / float64(want)
	}
	l := ds.lat.Summary()
	pubRate := float64(pub.ok.Load()) / pubEnd.Sub(start).Seconds()
	machineBusy := 0.0
	if mt1 > mt0 {
		machineBusy = (mb1 - mb0) / (mt1 - mt0)
	}
	rec := map[string]any{
		"scenario": "fanout", "subs": *subs, "connected": cs.ok, "connect_failed": cs.failed, "procs": c.procs,
		"rate_asked": *rate, "duration_s": dur.Seconds(), "size": *size, "publishers": *workers, "via": *via,
		"published": pub.ok.Load(), "publish_failed": pub.failed(), "publish_behind": pub.behind.Load(),
		"publish_rate": round(pubRate, 1), "expected": want, "received": recv, "loss": round(loss, 6),
		"deliveries_per_s": round(float64(recv)/window, 0), "drain_s": round(drained.Sub(pubEnd).Seconds(), 3),
		"latency": l, "closed_by_server": closed, "client_cpu_s": round(clientCPU, 2),
		"client_cpu_connect_s": round(cs.cpu, 2), "machine_busy": round(machineBusy, 3),
	}
	summary := fmt.Sprintf("fanout: %d subs x %.0f msg/s for %v: published %d (%.0f/s), received %d of %d (loss %.4f%%), %.0f deliveries/s, latency p50 %.1fms p90 %.1fms p99 %.1fms max %.1fms",
		cs.ok, *rate, *dur, pub.ok.Load(), pubRate, recv, want, loss*100, float64(recv)/window, l.P50, l.P90, l.P99, l.MaxMS)
	if len(c.servers) > 0 {
		cpu := cpu1 - cpu0
		rec["server_cpu_s"] = round(cpu, 2)
		rec["server_cores"] = round(cpu/window, 2)
		if recv > 0 {
			rec["server_cpu_s_per_million"] = round(cpu/(float64(recv)/1e6), 3)
		}
		summary += fmt.Sprintf("; server CPU %.2fs (%.2f cores, %.3f s per million deliveries)", cpu, cpu/window, cpu/(float64(recv)/1e6))
		if werr == nil && w1 > w0 && recv > 0 {
			// Every write system call of the server, the API answers
			// included: deliveries per write says how well frames batch.
			rec["server_writes"] = w1 - w0
			rec["deliveries_per_write"] = round(float64(recv)/float64(w1-w0), 2)
			summary += fmt.Sprintf("; %d server writes (%.1f deliveries each)", w1-w0, float64(recv)/float64(w1-w0))
		}
	}
	if ds.unstamped > 0 {
		// Frames without a send time: not the tool's messages, and not
		// in the latency.
		rec["unstamped"] = ds.unstamped
	}
	summary += fmt.Sprintf("; client CPU %.1fs (%.1fs of it connecting); machine busy %.0f%%", clientCPU, cs.cpu, machineBusy*100)
	if len(closed) > 0 {
		summary += fmt.Sprintf("; closed by server: %v", closed)
	}
	if n := pub.behind.Load(); n > 0 {
		summary += fmt.Sprintf("; publisher fell behind by %d messages", n)
	}
	return c.report(summary, rec)
}

// publisher sends stamped messages at a fixed rate.
type publisher struct {
	size int
	// send sends one message, and names the cause if it failed.
	send func(body []byte) (cause string)

	ok     atomic.Int64
	behind atomic.Int64
	fmu    sync.Mutex
	fails  map[string]int64
}

func (p *publisher) failed() map[string]int64 {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	return p.fails
}

func (p *publisher) fail(cause string) {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	if p.fails == nil {
		p.fails = map[string]int64{}
	}
	p.fails[cause]++
}

// run publishes rate messages a second for d, from workers goroutines.
// A message the workers could not take in time is counted as behind and
// not sent: the rate the server saw is the published count over d.
func (p *publisher) run(rate float64, d time.Duration, workers int) {
	seqs := make(chan int64, 4*workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range seqs {
				p.post(seq)
			}
		}()
	}
	start := time.Now()
	total := int64(rate * d.Seconds())
	var sent int64
	t := time.NewTicker(time.Millisecond)
	for now := range t.C {
		due := min(total, int64(now.Sub(start).Seconds()*rate))
		for ; sent < due; sent++ {
			select {
			case seqs <- sent:
			default:
				p.behind.Add(1)
			}
		}
		if sent >= total {
			break
		}
	}
	t.Stop()
	close(seqs)
	wg.Wait()
}

func (p *publisher) post(seq int64) {
	if cause := p.send(p.message(seq)); cause != "" {
		p.fail(cause)
		return
	}
	p.ok.Add(1)
}

// message is the seq-th message: a name.gossip object of about p.size
// bytes, stamped with the time it is made.
func (p *publisher) message(seq int64) []byte {
	var b strings.Builder
	b.WriteString(`{"type":"name.gossip","event":"bench","sender":"herald-bench","message":"@t=`)
	b.WriteString(strconv.FormatInt(time.Now().UnixNano(), 10))
	b.WriteString(" s=")
	b.WriteString(strconv.FormatInt(seq, 10))
	for b.Len() < p.size-2 {
		b.WriteByte('.')
	}
	b.WriteString(`"}`)
	return []byte(b.String())
}

// httpSender posts messages to the API's group send at url, over up to
// conns keep-alive connections.
func httpSender(url, token string, conns int) func([]byte) string {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}, Timeout: 10 * time.Second}
	return func(body []byte) string {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return failCause(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return "http_" + strconv.Itoa(resp.StatusCode)
		}
		return ""
	}
}

// layerSender sends messages to group with a channel layer of the
// servers' own kind, as a backend written in Go would.
func layerSender(layer channellayer.Layer, group string) func([]byte) string {
	return func(body []byte) string {
		msg, err := channellayer.ParseMessage(body)
		if err != nil {
			return "bad_message"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch _, err := layer.GroupSend(ctx, group, msg); {
		case err == nil:
			return ""
		case errors.Is(err, channellayer.ErrNoReceivers):
			return "no_receivers"
		default:
			return "layer_error"
		}
	}
}
