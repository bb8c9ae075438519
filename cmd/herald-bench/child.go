package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A run's connections live in child processes of the tool, each under
// the per-process file limit. The parent talks to a child over its
// standard input (commands, one a line: "connect", "churn", "stop") and
// reads its standard output (events, one JSON object a line). A child
// stops by itself when its standard input closes or its -max-time passes.

// event is one line a child writes.
type event struct {
	Ev   string `json:"ev"` // hello, ready, churned, progress, done
	Kid  int    `json:"kid"`
	Open int64  `json:"open"`
	// ready and churned
	OK      int64            `json:"ok,omitempty"`
	Failed  map[string]int64 `json:"failed,omitempty"`
	StartNS int64            `json:"start_ns,omitempty"`
	EndNS   int64            `json:"end_ns,omitempty"`
	Connect *histData        `json:"connect,omitempty"`
	// churned: the connections closed before their replacement was
	// dialled, by kind (normal, abrupt), and the replacements skipped
	// because the one before in the same slot was still under way.
	Closes   map[string]int64 `json:"closes,omitempty"`
	Skipped  int64            `json:"skipped,omitempty"`
	Recv     uint64           `json:"recv"`
	Unstamp  uint64           `json:"unstamped,omitempty"`
	Closed   map[string]int64 `json:"closed,omitempty"`
	Latency  *histData        `json:"latency,omitempty"`
	CPU      float64          `json:"cpu_s,omitempty"` // ready and done: the child's CPU seconds so far
	MaxRSSMB float64          `json:"rss_mb,omitempty"`
}

type childConfig struct {
	id      int
	urls    []*url.URL
	srcs    []net.IP
	n       int
	conc    int
	rate    float64 // connections per second for this child; 0: unlimited
	timeout time.Duration
	maxTime time.Duration
	reader  string // goroutine or epoll: how the connections are read
	// The churn: connections replaced per second, for how long, and the
	// fraction of them closed without a close frame.
	churnRate float64
	churnFor  time.Duration
	abrupt    float64
}

const nShards = 8

type child struct {
	cfg  childConfig
	out  *json.Encoder
	omu  sync.Mutex
	open atomic.Int64

	hs     [nShards]hist // latency, sharded to keep cores off each other's cache lines
	recv   []atomic.Uint64
	unst   atomic.Uint64
	cmu    sync.Mutex
	closed map[string]int64
	conns  []*wsConn    // the goroutine reader's connections
	ep     *epollReader // the epoll reader, if the child uses it
	wg     sync.WaitGroup
	stop   atomic.Bool
}

func runChild(args []string) error {
	fs := flag.NewFlagSet("child", flag.ContinueOnError)
	var cfg childConfig
	urls := fs.String("urls", "", "")
	srcs := fs.String("src", "", "")
	fs.IntVar(&cfg.id, "id", 0, "")
	fs.IntVar(&cfg.n, "n", 0, "")
	fs.IntVar(&cfg.conc, "conc", 64, "")
	fs.Float64Var(&cfg.rate, "rate", 0, "")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "")
	fs.DurationVar(&cfg.maxTime, "max-time", 10*time.Minute, "")
	fs.StringVar(&cfg.reader, "reader", "epoll", "")
	fs.Float64Var(&cfg.churnRate, "churn-rate", 0, "")
	fs.DurationVar(&cfg.churnFor, "churn-for", 0, "")
	fs.Float64Var(&cfg.abrupt, "abrupt", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*urls, ",") {
		u, err := url.Parse(s)
		if err != nil {
			return err
		}
		cfg.urls = append(cfg.urls, u)
	}
	for _, s := range strings.Split(*srcs, ",") {
		if s != "" {
			cfg.srcs = append(cfg.srcs, net.ParseIP(s))
		}
	}
	if dir := os.Getenv("HERALD_BENCH_CHILD_CPUPROFILE"); dir != "" {
		// Profiling the load client itself, to tell when it is the limit.
		stop, err := startCPUProfile(filepath.Join(dir, fmt.Sprintf("child-%d.cpu.prof", cfg.id)))
		if err != nil {
			return err
		}
		defer stop()
	}
	c, err := newChild(cfg, os.Stdout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.maxTime)
	defer cancel()
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	c.emit(event{Ev: "hello"})
	for {
		select {
		case <-ctx.Done():
			c.finish()
			return nil
		case cmd, ok := <-cmds:
			if !ok || cmd == "stop" {
				c.finish()
				return nil
			}
			switch cmd {
			case "connect":
				c.connect(ctx)
				go c.progress(ctx)
			case "churn":
				c.churn(ctx)
			}
		}
	}
}

// newChild makes a child that writes its events to out.
func newChild(cfg childConfig, out io.Writer) (*child, error) {
	c := &child{cfg: cfg, out: json.NewEncoder(out), closed: map[string]int64{}}
	if cfg.reader == "epoll" {
		var err error
		if c.ep, err = newEpollReader(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *child) emit(e event) {
	e.Kid = c.cfg.id
	e.Open = c.open.Load()
	c.omu.Lock()
	defer c.omu.Unlock()
	_ = c.out.Encode(e)
}

func (c *child) connect(ctx context.Context) {
	n := c.cfg.n
	c.recv = make([]atomic.Uint64, n)
	c.conns = make([]*wsConn, n)
	var (
		next    atomic.Int64
		ok      atomic.Int64
		fmu     sync.Mutex
		failed  = map[string]int64{}
		connect hist
		wg      sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < min(c.cfg.conc, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if c.cfg.rate > 0 {
					due := start.Add(time.Duration(float64(i) / c.cfg.rate * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						time.Sleep(d) // pacing the load, not synchronising
					}
				}
				d, err := c.dial(ctx, i)
				if err != nil {
					fmu.Lock()
					failed[failCause(err)]++
					fmu.Unlock()
					continue
				}
				connect.Record(d)
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	hd := connect.Data()
	cpu, _ := procCPU(os.Getpid())
	c.emit(event{Ev: "ready", OK: ok.Load(), Failed: failed, StartNS: start.UnixNano(), EndNS: end.UnixNano(), Connect: &hd, CPU: cpu})
}

// dial opens connection i and hands it to the child's reader; it
// returns how long the connect and the upgrade took.
func (c *child) dial(ctx context.Context, i int) (time.Duration, error) {
	var src net.IP
	if len(c.cfg.srcs) > 0 {
		src = c.cfg.srcs[i%len(c.cfg.srcs)]
	}
	u := c.cfg.urls[(i+c.cfg.id)%len(c.cfg.urls)]
	t0 := time.Now()
	ws, err := dialWS(ctx, u, src, c.cfg.timeout)
	if err != nil {
		return 0, err
	}
	d := time.Since(t0)
	c.open.Add(1)
	if c.ep != nil {
		c.ep.add(i, ws)
		return d, nil
	}
	c.conns[i] = ws
	c.wg.Add(1)
	go c.read(i, ws)
	return d, nil
}

// read is the goroutine reader: one goroutine per connection, blocked
// in its reads.
func (c *child) read(i int, ws *wsConn) {
	defer c.wg.Done()
	var now int64
	reads := ^uint64(0)
	for {
		p, err := ws.next()
		if err != nil {
			if ws.dropped.Load() {
				err = net.ErrClosed
			}
			c.ended(err)
			return
		}
		if ws.cr.reads != reads {
			// The frame came with a new read from the socket.
			now, reads = time.Now().UnixNano(), ws.cr.reads
		}
		c.got(i, p, now)
	}
}

// got counts message p of connection i, received at now (Unix ns), and
// records its latency.
func (c *child) got(i int, p []byte, now int64) {
	c.recv[i].Add(1)
	if t, ok := stamp(p); ok {
		c.hs[i%nShards].Record(time.Duration(now - t))
	} else {
		c.unst.Add(1)
	}
}

// ended counts a connection that ended with err, by cause.
func (c *child) ended(err error) {
	c.open.Add(-1)
	cause := failCause(err)
	if ce, ok := err.(errClosed); ok {
		cause = "code_" + strconv.Itoa(ce.code)
	} else if c.stop.Load() || errors.Is(err, net.ErrClosed) {
		// The child closed it: at its finish, or replacing it.
		cause = "by_client"
	}
	c.cmu.Lock()
	if cause == "other" && c.closed[cause] == 0 {
		fmt.Fprintf(os.Stderr, "herald-bench: child %d: connection ended: %v\n", c.cfg.id, err)
	}
	c.closed[cause]++
	c.cmu.Unlock()
}

func (c *child) received() uint64 {
	var n uint64
	for i := range c.recv {
		n += c.recv[i].Load()
	}
	return n
}

func (c *child) progress(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.stop.Load() {
				return
			}
			c.emit(event{Ev: "progress", Recv: c.received()})
		}
	}
}

func (c *child) finish() {
	c.stop.Store(true)
	recv := c.received()
	var m merged
	for i := range c.hs {
		m.Add(c.hs[i].Data())
	}
	lat := histData{MaxUS: m.max}
	for i, n := range m.counts {
		if n > 0 {
			lat.Buckets = append(lat.Buckets, [2]uint64{uint64(i), n})
		}
	}
	// The goroutine reader's connections are closed here; the epoll
	// reader's loops see stop and close their own.
	for _, ws := range c.conns {
		if ws != nil {
			ws.nc.Close()
		}
	}
	c.wg.Wait()
	cpu, _ := procCPU(os.Getpid())
	rss, _ := procRSS(os.Getpid())
	c.cmu.Lock()
	closed := c.closed
	delete(closed, "by_client")
	c.cmu.Unlock()
	c.emit(event{Ev: "done", Recv: recv, Unstamp: c.unst.Load(), Closed: closed, Latency: &lat, CPU: cpu, MaxRSSMB: float64(rss) / (1 << 20)})
}

// fleet is the parent's view of its children.
type fleet struct {
	kids  []*kid
	mu    sync.Mutex
	start time.Time
}

type kid struct {
	cmd     *exec.Cmd
	in      io.WriteCloser
	hello   chan struct{}
	ready   chan event
	churned chan event
	done    chan event
	mu      sync.Mutex
	last    event // latest progress
}

type fleetConfig struct {
	n       int
	procs   int
	urls    []string
	srcs    []string
	conc    int
	rate    float64
	timeout time.Duration
	maxTime time.Duration
	reader  string
	// The churn, in all: each child replaces its share of churnRate,
	// in proportion to its connections.
	churnRate float64
	churnFor  time.Duration
	abrupt    float64
}

// share is child k's part of n things spread over procs children: n/procs,
// and one more for the first n%procs.
func share(n, procs, k int) int {
	s := n / procs
	if k < n%procs {
		s++
	}
	return s
}

// spawn starts the children and waits for each to say hello.
func spawn(fc fleetConfig) (*fleet, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f := &fleet{}
	procs := max(fc.procs, 1)
	for k := 0; k < procs; k++ {
		n := share(fc.n, procs, k)
		churnRate := 0.0
		if fc.n > 0 {
			churnRate = fc.churnRate * float64(n) / float64(fc.n)
		}
		args := []string{"child", "-id", strconv.Itoa(k), "-n", strconv.Itoa(n),
			"-urls", strings.Join(fc.urls, ","), "-src", strings.Join(fc.srcs, ","),
			"-conc", strconv.Itoa(fc.conc), "-rate", strconv.FormatFloat(fc.rate/float64(procs), 'f', -1, 64),
			"-timeout", fc.timeout.String(), "-max-time", fc.maxTime.String(), "-reader", fc.reader,
			"-churn-rate", strconv.FormatFloat(churnRate, 'f', -1, 64), "-churn-for", fc.churnFor.String(),
			"-abrupt", strconv.FormatFloat(fc.abrupt, 'f', -1, 64)}
		cmd := exec.Command(exe, args...)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			f.kill()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			f.kill()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			f.kill()
			return nil, err
		}
		kd := &kid{cmd: cmd, in: in, hello: make(chan struct{}), ready: make(chan event, 1), churned: make(chan event, 1), done: make(chan event, 1)}
		f.kids = append(f.kids, kd)
		go kd.listen(out)
	}
	for _, kd := range f.kids {
		select {
		case <-kd.hello:
		case <-time.After(30 * time.Second):
			f.kill()
			return nil, fmt.Errorf("a child process did not start")
		}
	}
	return f, nil
}

func (kd *kid) listen(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintf(os.Stderr, "herald-bench: bad line from child: %s\n", sc.Bytes())
			continue
		}
		switch e.Ev {
		case "hello":
			close(kd.hello)
		case "ready":
			kd.ready <- e
			kd.mu.Lock()
			kd.last = e
			kd.mu.Unlock()
		case "churned":
			kd.churned <- e
		case "progress":
			kd.mu.Lock()
			kd.last = e
			kd.mu.Unlock()
		case "done":
			kd.done <- e
		}
	}
}

func (f *fleet) send(cmd string) {
	for _, kd := range f.kids {
		_, _ = io.WriteString(kd.in, cmd+"\n")
	}
}

// connect has every child open its connections and waits for all of
// them, within limit.
func (f *fleet) connect(limit time.Duration) ([]event, error) {
	f.start = time.Now()
	return f.await("connect", func(kd *kid) chan event { return kd.ready }, limit)
}

// churn has every child replace its connections for its -churn-for and
// waits for all of their reports, within limit.
func (f *fleet) churn(limit time.Duration) ([]event, error) {
	return f.await("churn", func(kd *kid) chan event { return kd.churned }, limit)
}

// await sends cmd to every child and collects the event each answers
// with on its channel reply, within limit.
func (f *fleet) await(cmd string, reply func(*kid) chan event, limit time.Duration) ([]event, error) {
	f.send(cmd)
	var evs []event
	deadline := time.After(limit)
	for _, kd := range f.kids {
		select {
		case e := <-reply(kd):
			evs = append(evs, e)
		case <-deadline:
			return evs, fmt.Errorf("%s took longer than %v", cmd, limit)
		}
	}
	return evs, nil
}

// progress sums the children's latest counts.
func (f *fleet) progress() (recv uint64, open int64) {
	for _, kd := range f.kids {
		kd.mu.Lock()
		recv += kd.last.Recv
		open += kd.last.Open
		kd.mu.Unlock()
	}
	return recv, open
}

// stop tells the children to report and exit, and collects their reports.
func (f *fleet) stop() []event {
	f.send("stop")
	var evs []event
	deadline := time.After(60 * time.Second)
	for _, kd := range f.kids {
		select {
		case e := <-kd.done:
			evs = append(evs, e)
		case <-deadline:
		}
	}
	f.kill()
	return evs
}

// kill ends every child that has not exited, and reaps them all.
func (f *fleet) kill() {
	for _, kd := range f.kids {
		_ = kd.in.Close()
		done := make(chan struct{})
		go func() { _ = kd.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = kd.cmd.Process.Kill()
			<-done
		}
	}
	f.kids = nil
}
