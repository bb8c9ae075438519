// Command herald-bench is Herald's load tool. It opens many WebSocket
// connections to running Herald instances, from child processes of its
// own (each under the per-process file limit), publishes to them, and
// reports connect rate, memory per connection, deliveries per second,
// loss, publish-to-receive latency and server CPU, each run as one
// summary line and one JSON line.
//
// Every run is bounded in count and time, targets loopback addresses
// only, and stops by itself. Run "herald-bench -help" for the scenarios.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
)

const usage = `herald-bench: load tool for Herald

usage: herald-bench <scenario> [flags]

scenarios:
  idle     open -n WebSockets to /notifications/, hold them for -hold, and
           report the server's RSS per connection (-server-pid)
  connect  open -n WebSockets as fast as possible (or at -rate per second)
           and report the connect rate, handshake latency and failures
  fanout   -subs subscribers of the group; publish -rate messages/s for
           -duration through POST /api/groups/{group}/send; report
           deliveries/s, loss, publish-to-receive latency and server CPU
  pg       -clients subscribers; INSERT -inserts rows into posts at -rate
           per second (-database-url); report INSERT-to-frame latency
  churn    hold -n WebSockets open while closing and dialling again -rate
           of them per second for -duration (-abrupt of the closes without
           a close frame); report the reconnect rate and latency, failures,
           and the server's goroutines, heap and RSS before, during and
           after, and its CPU per reconnect
  chaos    run cmd/herald's chaos soak for -duration with -seed and -faults:
           three instances on a Redis and a Postgres of its own under random
           faults, checked against every delivery promise; prints the
           oracle's JSON summary (needs the source tree and Go)
  serve    run the Herald server in this process, built by the function
           cmd/herald runs (package cmd/herald/server) from herald's
           settings, with -cpuprofile and -memprofile: run a scenario
           against it to profile the server under load

Every run prints one summary line and one JSON line (also appended to
-record if set). Run "herald-bench <scenario> -help" for its flags.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-help" || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprint(os.Stderr, usage)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	var err error
	switch os.Args[1] {
	case "child":
		err = runChild(os.Args[2:])
	case "idle", "connect", "conns":
		err = runConns(os.Args[1], os.Args[2:])
	case "fanout":
		err = runFanout(os.Args[2:])
	case "pg":
		err = runPG(os.Args[2:])
	case "churn":
		err = runChurn(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	case "chaos":
		err = runChaos(os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		err = fmt.Errorf("unknown scenario %q", os.Args[1])
	}
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "herald-bench:", err)
		os.Exit(1)
	}
}

// common are the flags every scenario has.
type common struct {
	urls      string
	pids      string
	procs     int
	sources   int
	conc      int
	label     string
	record    string
	timeout   time.Duration
	connLimit time.Duration
	reader    string

	servers servers
	wsURLs  []string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.urls, "url", "ws://127.0.0.1:8000/notifications/", "WebSocket URL(s), comma-separated; connections are spread over them (loopback only)")
	fs.StringVar(&c.pids, "server-pid", "", "pid(s) of the server process(es), comma-separated, for RSS and CPU")
	fs.IntVar(&c.procs, "procs", 0, "client processes (default: one per 15,000 connections)")
	fs.IntVar(&c.sources, "sources", 0, "loopback source addresses 127.0.0.2, .3, ... to spread connections over (default: 127.0.0.1 alone up to 20,000 connections, else one per 10,000)")
	fs.IntVar(&c.conc, "conc", 64, "concurrent connection attempts per client process")
	fs.StringVar(&c.label, "label", "", "free text recorded with the result, such as the layer")
	fs.StringVar(&c.record, "record", "", "file to append the JSON line to")
	fs.DurationVar(&c.timeout, "dial-timeout", 10*time.Second, "timeout of one connection attempt")
	fs.DurationVar(&c.connLimit, "connect-limit", 3*time.Minute, "longest time to open all connections")
	fs.StringVar(&c.reader, "reader", "epoll", "how client processes read their connections: epoll (one epoll loop per process, Linux only) or goroutine (one goroutine per connection, blocked in its reads)")
}

func (c *common) check(n int) error {
	switch {
	case c.reader != "epoll" && c.reader != "goroutine":
		return fmt.Errorf("-reader: want epoll or goroutine, got %q", c.reader)
	case c.reader == "epoll" && runtime.GOOS != "linux":
		return fmt.Errorf("-reader epoll: Linux only; use -reader goroutine")
	}
	for _, s := range strings.Split(c.urls, ",") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "http") {
			return fmt.Errorf("-url: want ws://host:port/path, got %q", s)
		}
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("-url: %q is not a loopback address; this tool only loads this machine", u.Host)
		}
		c.wsURLs = append(c.wsURLs, s)
	}
	var err error
	if c.servers, err = parsePids(c.pids); err != nil {
		return err
	}
	if c.procs <= 0 {
		c.procs = max(1, (n+14999)/15000)
	}
	if n/c.procs > 19000 {
		return fmt.Errorf("-procs %d: %d connections per process is over the 20,000 open-file limit; use more processes", c.procs, n/c.procs)
	}
	return nil
}

// perSource is how many connections the tool opens from one loopback
// source address by default, above 20,000 in all. An address has 28,232
// ephemeral ports (32768–60999) towards one destination; the margin
// leaves room for ports still in TIME_WAIT from an earlier run where the
// kernel does not reuse them (net.ipv4.tcp_tw_reuse 0). The port is
// chosen at connect time (bindNoPort), so more addresses cost nothing.
const perSource = 10000

func (c *common) srcs(n int) []string {
	k := c.sources
	if k == 0 && n > 20000 {
		k = (n + perSource - 1) / perSource
	}
	var s []string
	for i := 0; i < k; i++ {
		s = append(s, fmt.Sprintf("127.0.0.%d", 2+i))
	}
	return s
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpBase turns the first WebSocket URL into the server's HTTP base.
func (c *common) httpBase() string {
	u, _ := url.Parse(c.wsURLs[0])
	return "http://" + u.Host
}

// report prints the summary line and the JSON line of a run.
func (c *common) report(summary string, rec map[string]any) error {
	rec["label"] = c.label
	rec["time"] = time.Now().UTC().Format(time.RFC3339)
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	fmt.Println(summary)
	fmt.Println(string(b))
	if c.record != "" {
		f, err := os.OpenFile(c.record, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = fmt.Fprintln(f, string(b))
		return err
	}
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

// connectStats sums the children's connect reports.
type connectStats struct {
	ok      int64
	failed  map[string]int64
	seconds float64
	lat     merged
	cpu     float64 // the children's CPU seconds once connected
}

func sumConnect(evs []event) connectStats {
	cs := connectStats{failed: map[string]int64{}}
	var start, end int64 = math.MaxInt64, 0
	for _, e := range evs {
		cs.ok += e.OK
		for k, v := range e.Failed {
			cs.failed[k] += v
		}
		cs.cpu += e.CPU
		start, end = min(start, e.StartNS), max(end, e.EndNS)
		if e.Connect != nil {
			cs.lat.Add(*e.Connect)
		}
	}
	if end > start {
		cs.seconds = float64(end-start) / 1e9
	}
	return cs
}

// doneStats totals the children's "done" events.
type doneStats struct {
	recv      uint64           // frames received
	unstamped uint64           // of which without a send time
	closed    map[string]int64 // connections the server ended, by cause
	cpu       float64          // the children's CPU seconds
	lat       merged           // publish-to-receive latency
}

func sumDone(evs []event) doneStats {
	ds := doneStats{closed: map[string]int64{}}
	for _, e := range evs {
		ds.recv += e.Recv
		ds.unstamped += e.Unstamp
		ds.cpu += e.CPU
		if e.Latency != nil {
			ds.lat.Add(*e.Latency)
		}
		for k, v := range e.Closed {
			ds.closed[k] += v
		}
	}
	return ds
}

// checkPace bounds a scenario's -rate (per second) and -duration, so
// that every run stops by itself.
func checkPace(rate float64, dur time.Duration) error {
	switch {
	case rate <= 0 || rate > 100000:
		return fmt.Errorf("-rate: want more than 0, at most 100000")
	case dur <= 0 || dur > 5*time.Minute:
		return fmt.Errorf("-duration: want more than 0, at most 5m")
	}
	return nil
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
