package web

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clientHarness runs herald.js in a node context with fake WebSocket,
// EventSource, timers, clock and randomness, drives it through the
// scenarios below and prints the failed checks as a JSON list of strings.
// Each scenario gets a fresh context, so a Herald's state never leaks into
// the next.
const clientHarness = `
const fs = require('node:fs');
const vm = require('node:vm');
const src = fs.readFileSync(process.argv[2], 'utf8');
const failures = [];
let scenario = '';
function check(ok, what) { if (!ok) failures.push(scenario + ': ' + what); }

function world(opts) {
  const w = { sockets: [], streams: [], timers: [], now: 1000000, rand: 0.5 };
  class FakeWS {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; this.ls = {}; w.sockets.push(this); }
    addEventListener(t, fn) { (this.ls[t] = this.ls[t] || []).push(fn); }
    fire(t, ev) { for (const fn of this.ls[t] || []) fn(ev || {}); }
    open() { this.readyState = 1; this.fire('open'); }
    recv(obj) { this.fire('message', { data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
    drop(code) { this.readyState = 3; this.fire('close', { code: code }); }
    send(d) { this.sent.push(d); }
    close() { this.readyState = 3; }
  }
  class FakeES extends FakeWS {
    constructor(url) { super(url); w.sockets.pop(); w.streams.push(this); }
    fail() { this.fire('error'); }
    close() { this.readyState = 2; }
  }
  const g = {
    URL: URL, JSON: JSON,
    location: { href: opts.page || 'http://example.test/app/' },
    navigator: { onLine: true },
    EventSource: FakeES,
    setTimeout: (fn, ms) => { w.timers.push({ fn: fn, ms: ms }); return w.timers.length; },
    clearTimeout: (id) => { if (id && w.timers[id - 1]) w.timers[id - 1].fn = null; },
    addEventListener: (t, fn) => { w.win[t] = fn; },
  };
  w.g = g;
  w.win = {};
  if (opts.websocket !== false) g.WebSocket = FakeWS;
  const ctx = vm.createContext(g);
  vm.runInContext(src, ctx, { filename: 'herald.js' });
  vm.runInContext('Date.now = () => clock(); Math.random = () => dice();', Object.assign(ctx, {
    clock: () => w.now, dice: () => w.rand,
  }));
  w.Herald = ctx.Herald;
  w.h = new ctx.Herald(opts.herald || {});
  w.got = []; w.resyncs = 0; w.resynced = []; w.states = [];
  w.h.on('message', (m) => w.got.push(m.n));
  w.h.on('resync', (r) => { w.resyncs++; w.resynced.push(r.group === undefined ? '*' : r.group); });
  w.h.on('state', (s) => w.states.push(s));
  // fire runs the latest pending timer, as if its delay had passed.
  w.fire = () => {
    const t = w.timers.filter((t) => t.fn).pop();
    check(t, 'no retry was scheduled');
    if (!t) return 0;
    const fn = t.fn; t.fn = null; w.now += t.ms; fn();
    return t.ms;
  };
  w.ws = () => w.sockets[w.sockets.length - 1];
  w.es = () => w.streams[w.streams.length - 1];
  w.state = () => w.states[w.states.length - 1];
  // param reads one query parameter of a connection's URL, decoded.
  w.param = (conn, name) => new URL(conn.url).searchParams.get(name);
  w.positions = () => JSON.stringify(w.h.positions);
  return w;
}

// gossip makes a frame of a group with history, as a server that names the
// group sends it.
function frame(n, group, id) { return { type: 'name.gossip', n: n, herald_id: id, herald_group: group }; }

scenario = 'ids';
{
  const { Herald } = world({});
  const cases = [
    ['1-0', '1-0', 0], ['1-0', '1-1', -1], ['2-0', '1-9', 1], ['10-0', '9-0', 1], ['9-10', '9-9', 1],
    ['0010-0', '10-0', 0], ['1712345678901-18446744073709551615', '1712345678901-18446744073709551614', 1],
  ];
  for (const [a, b, want] of cases) check(Herald.compareIds(a, b) === want, 'compareIds(' + a + ', ' + b + ') = ' + Herald.compareIds(a, b));
  check(Herald.backoff(0, 500, 10000, 0) === 0, 'full jitter starts at 0');
  check(Herald.backoff(0, 500, 10000, 0.999) === 499, 'first ceiling is minDelay');
  check(Herald.backoff(3, 500, 10000, 0.999) === 3996, 'ceiling doubles per attempt: ' + Herald.backoff(3, 500, 10000, 0.999));
  check(Herald.backoff(40, 500, 10000, 0.999) === 9990, 'ceiling capped at maxDelay: ' + Herald.backoff(40, 500, 10000, 0.999));
}

scenario = 'websocket';
{
  const w = world({ page: 'https://example.test/app/', herald: { token: () => 'tok en' } });
  w.h.connect();
  check(w.ws().url === 'wss://example.test/notifications/?token=tok+en', 'first URL ' + w.ws().url);
  check(w.state().state === 'connecting', 'state ' + w.state().state);
  check(!w.h.send({ type: 'whoami' }), 'send before open succeeded');
  w.ws().open();
  check(w.state().state === 'open' && w.state().resumed === false && w.state().transport === 'websocket', 'open: ' + JSON.stringify(w.state()));
  check(w.h.send({ type: 'subscribe', group: 'team.7' }), 'send when open failed');
  check(w.ws().sent[0] === '{"type":"subscribe","group":"team.7"}', 'sent ' + w.ws().sent[0]);
  w.ws().recv({ type: 'name.gossip', n: 1, herald_id: '9-0' });
  w.ws().recv({ type: 'name.gossip', n: 2, herald_id: '10-0' });
  w.ws().recv({ type: 'name.gossip', n: 'dup', herald_id: '10-0' });
  w.ws().recv({ type: 'name.gossip', n: 'old', herald_id: '9-5' });
  w.ws().recv({ type: 'subscribed', n: 3 });
  w.ws().recv('not json');
  w.ws().recv({ type: 'name.gossip', n: 4, herald_id: '10-1' });
  check(JSON.stringify(w.got) === '[1,2,3,4]', 'delivered ' + JSON.stringify(w.got));
  check(w.h.lastId === '10-1', 'lastId ' + w.h.lastId);

  w.ws().drop(1012);
  check(w.state().state === 'waiting' && w.state().code === 1012 && w.state().delay <= 500, 'after 1012: ' + JSON.stringify(w.state()));
  w.fire();
  check(w.ws().url === 'wss://example.test/notifications/?since=10-1&token=tok+en', 'resume URL ' + w.ws().url);
  w.ws().open();
  check(w.state().resumed === true, 'reconnect not marked resumed');
  w.ws().recv({ type: 'name.gossip', n: 'replayed', herald_id: '10-1' });
  w.ws().recv({ type: 'resync' });
  check(w.resyncs === 1 && w.h.lastId === '', 'resync: ' + w.resyncs + ' events, lastId ' + w.h.lastId);
  w.ws().recv({ type: 'name.gossip', n: 5, herald_id: '3-0' }); // a new history may start lower
  check(JSON.stringify(w.got) === '[1,2,3,4,5]', 'after resync ' + JSON.stringify(w.got));

  w.h.close();
  check(w.state().state === 'closed' && w.timers.every((t) => !t.fn), 'close left a retry or state ' + w.state().state);
}

scenario = 'a position per group';
{
  const w = world({ herald: { groups: ['team.7', 'bad,name', 'user.u1'] } });
  w.h.connect();
  check(w.ws().url === 'ws://example.test/notifications/?groups=team.7%2Cuser.u1', 'first URL ' + w.ws().url);
  w.ws().open();
  check(w.state().resumed === false && JSON.stringify(w.state().since) === '{}', 'first open: ' + JSON.stringify(w.state()));
  w.ws().recv(frame(1, 'gossip', '10-0'));
  w.ws().recv(frame(2, 'team.7', '5-0'));        // before gossip's position, but in its own group
  w.ws().recv(frame('old', 'gossip', '9-0'));
  w.ws().recv(frame(3, 'team.7', '6-0'));
  w.ws().recv(frame('dup', 'team.7', '5-0'));
  w.ws().recv(frame(4, 'gossip', '10-1'));
  w.ws().recv(frame(5, '__proto__', '1-0'));
  w.ws().recv(frame('dup', '__proto__', '1-0'));
  check(JSON.stringify(w.got) === '[1,2,3,4,5]', 'delivered ' + JSON.stringify(w.got));
  check(w.positions() === '{"gossip":"10-1","team.7":"6-0","__proto__":"1-0"}', 'positions ' + w.positions());
  check(w.h.lastId === '1-0', 'lastId ' + w.h.lastId);

  w.ws().drop(1012);
  w.fire();
  check(w.param(w.ws(), 'since') === 'gossip:10-1,team.7:6-0,__proto__:1-0' && w.param(w.ws(), 'groups') === 'team.7,user.u1',
    'resume URL ' + w.ws().url);
  w.ws().open();
  check(w.state().resumed === true && JSON.stringify(w.state().since) === w.positions(), 'resumed open: ' + JSON.stringify(w.state()));

  const sub = { type: 'subscribe', group: 'team.7' };
  w.h.send(sub);
  w.h.send({ type: 'subscribe', group: 'team.7', since: '1-0' });
  w.h.send({ type: 'subscribe', group: 'team.8' });
  w.h.send({ type: 'unsubscribe', group: 'gossip' });
  check(JSON.stringify(w.ws().sent) === JSON.stringify([
    '{"type":"subscribe","group":"team.7","since":"6-0"}',
    '{"type":"subscribe","group":"team.7","since":"1-0"}',
    '{"type":"subscribe","group":"team.8"}',
    '{"type":"unsubscribe","group":"gossip"}',
  ]), 'sent ' + JSON.stringify(w.ws().sent));
  check(sub.since === undefined, 'send changed the page\'s frame');
  check(w.positions() === '{"team.7":"6-0","__proto__":"1-0"}', 'after unsubscribing from gossip ' + w.positions());
  w.ws().recv(frame(4.5, 'gossip', '10-2')); // sent before the server took the unsubscribe

  w.ws().recv({ type: 'resync', group: 'team.7' });
  check(w.positions() === '{"__proto__":"1-0","gossip":"10-2"}' && w.h.lastId === '10-2', 'resync of team.7: ' + w.positions() + ', lastId ' + w.h.lastId);
  w.ws().recv(frame(6, 'team.7', '2-0')); // its new history starts lower
  w.ws().recv(frame('dup', 'gossip', '10-1'));
  w.ws().recv(frame(7, 'gossip', '11-0'));
  w.ws().recv({ type: 'resync', group: 'gossip' });
  check(w.positions() === '{"__proto__":"1-0","team.7":"2-0"}' && w.h.lastId === '', 'resync of gossip: ' + w.positions() + ', lastId ' + w.h.lastId);
  w.ws().recv(frame(8, 'gossip', '1-5'));
  w.ws().recv({ type: 'resync' });       // names no group: all of them
  check(w.positions() === '{}' && w.h.lastId === '', 'resync of all: ' + w.positions() + ', lastId ' + w.h.lastId);
  check(JSON.stringify(w.resynced) === '["team.7","gossip","*"]', 'resync events ' + JSON.stringify(w.resynced));
  check(JSON.stringify(w.got) === '[1,2,3,4,5,4.5,6,7,8]', 'delivered ' + JSON.stringify(w.got));
  w.ws().drop(1012);
  w.fire();
  check(w.param(w.ws(), 'since') === null, 'since after resync of all ' + w.ws().url);
}

scenario = 'since option';
{
  const w = world({ herald: { since: { gossip: '4-0', 'team.7': '2-0', '': '1-0', 'bad:name': '1-0', x: 'not-an-id' } } });
  check(w.h.lastId === '1-0', 'lastId ' + w.h.lastId);
  w.h.connect();
  check(w.param(w.ws(), 'since') === '1-0,gossip:4-0,team.7:2-0', 'first URL ' + w.ws().url);
  w.ws().open();
  w.ws().recv(frame(1, 'gossip', '5-0')); // the server names groups: '' was resumed as one of them
  check(w.positions() === '{"gossip":"5-0","team.7":"2-0"}', 'positions ' + w.positions());
  w.ws().drop(1012);
  w.fire();
  check(w.param(w.ws(), 'since') === 'gossip:5-0,team.7:2-0', 'resume URL ' + w.ws().url);
}

scenario = 'since string, server that names groups';
{
  const w = world({ herald: { since: '5-0' } });
  w.h.connect();
  check(w.param(w.ws(), 'since') === '5-0', 'first URL ' + w.ws().url);
  w.ws().open();
  w.ws().recv(frame(1, 'gossip', '6-0'));
  w.ws().recv(frame('dup', 'gossip', '6-0'));
  check(w.positions() === '{"gossip":"6-0"}' && w.h.lastId === '6-0', 'positions ' + w.positions());
  w.ws().drop(1012);
  w.fire();
  check(w.param(w.ws(), 'since') === 'gossip:6-0', 'resume URL ' + w.ws().url);
  check(JSON.stringify(w.got) === '[1]', 'delivered ' + JSON.stringify(w.got));

  const v = world({ herald: { since: '5-0' } });
  v.h.connect();
  v.ws().open();
  v.ws().recv({ type: 'resync', group: 'gossip' }); // 5-0 is gone
  check(v.positions() === '{}' && v.h.lastId === '', 'after resync: ' + v.positions() + ', lastId ' + v.h.lastId);
  v.ws().drop(1012);
  v.fire();
  check(v.param(v.ws(), 'since') === null, 'the lost position was sent again: ' + v.ws().url);
}

scenario = 'event stream in several groups';
{
  const w = world({ websocket: false, herald: { groups: ['a', 'b'], since: { a: '1-0', b: '2-0' } } });
  w.h.connect();
  check(w.param(w.es(), 'since') === 'a:1-0,b:2-0' && w.param(w.es(), 'groups') === 'a,b', 'SSE URL ' + w.es().url);
  w.es().open();
  w.es().recv(frame(1, 'a', '1-1'));
  w.es().recv(frame(2, 'b', '2-1'));
  w.es().recv(frame('dup', 'a', '1-0'));
  w.es().fail();
  w.fire();
  check(w.param(w.es(), 'since') === 'a:1-1,b:2-1', 'SSE resume URL ' + w.es().url);
  check(JSON.stringify(w.got) === '[1,2]', 'delivered ' + JSON.stringify(w.got));
}

scenario = 'backoff';
{
  const w = world({});
  w.rand = 0.999;
  w.h.connect();
  const delays = [];
  for (let i = 0; i < 4; i++) {
    w.ws().open();
    w.ws().drop(1006); // up, but not for long
    delays.push(w.fire());
  }
  check(JSON.stringify(delays) === '[499,999,1998,3996]', 'delays while unstable ' + JSON.stringify(delays));
  w.ws().open();
  w.now += 5000;
  w.ws().drop(1006);
  check(w.fire() === 499, 'backoff not reset after a stable connection');
  w.ws().drop(4008);
  check(w.state().delay >= 1998, 'too slow (4008) retried after ' + w.state().delay + 'ms');
  check(w.streams.length === 0, 'fell back to SSE although WebSockets worked');
  w.h.reconnect();
  check(w.timers.every((t) => !t.fn) && w.state().state === 'connecting', 'reconnect() did not skip the wait');
}

scenario = 'fallback';
{
  const w = world({ herald: { since: '5-0' } });
  w.h.connect();
  for (let i = 0; i < 3; i++) {
    check(w.streams.length === 0, 'SSE before 3 WebSocket failures');
    w.ws().drop(1006);
    w.fire();
  }
  check(w.sockets.length === 3 && w.streams.length === 1, w.sockets.length + ' sockets, ' + w.streams.length + ' streams');
  check(w.es().url === 'http://example.test/notifications/?since=5-0', 'SSE URL ' + w.es().url);
  w.es().open();
  check(w.state().transport === 'eventsource' && w.state().resumed, 'SSE open: ' + JSON.stringify(w.state()));
  check(!w.h.send({ type: 'whoami' }), 'send on an event stream succeeded');
  w.es().recv({ type: 'name.gossip', n: 1, herald_id: '5-0' });
  w.es().recv({ type: 'name.gossip', n: 2, herald_id: '6-0' });
  w.es().fire('close', { data: '{"code":1012,"reason":"restart"}' });
  check(w.es().readyState === 2 && w.state().code === 1012, 'close event: ' + JSON.stringify(w.state()));
  w.fire();
  check(w.es().url === 'http://example.test/notifications/?since=6-0', 'SSE resume URL ' + w.es().url);
  w.es().fail();
  check(w.es().readyState === 2 && w.state().state === 'waiting', 'error did not close the stream for our own retry');
  check(JSON.stringify(w.got) === '[2]', 'delivered ' + JSON.stringify(w.got));
}

scenario = 'probe';
{
  const w = world({});
  w.h.connect();
  for (let i = 0; i < 3; i++) {
    w.ws().drop(1006);
    w.fire();
  }
  w.es().open();
  w.es().recv({ type: 'name.gossip', n: 1, herald_id: '7-0' });
  const sockets = w.sockets.length;
  check(w.fire() === 60000, 'no WebSocket probe 60 s after falling back');
  check(w.sockets.length === sockets + 1 && w.ws().url === 'ws://example.test/notifications/?since=7-0', 'probe: ' + (w.ws() && w.ws().url));
  w.ws().drop(1006); // still blocked
  check(w.es().readyState === 1 && w.state().state === 'open' && w.state().transport === 'eventsource', 'a failed probe disturbed the stream: ' + JSON.stringify(w.state()));
  check(w.fire() === 60000, 'no second probe after the first failed');
  w.es().recv({ type: 'name.gossip', n: 2, herald_id: '8-0' });
  w.ws().open(); // let through now: it takes over
  check(w.es().readyState === 2, 'the event stream was not closed when the WebSocket opened');
  check(w.state().state === 'open' && w.state().transport === 'websocket', 'after the probe opened: ' + JSON.stringify(w.state()));
  w.ws().recv({ type: 'name.gossip', n: 'replayed', herald_id: '8-0' });
  w.ws().recv({ type: 'name.gossip', n: 3, herald_id: '9-0' });
  check(JSON.stringify(w.got) === '[1,2,3]', 'delivered ' + JSON.stringify(w.got));
  check(w.h.send({ type: 'whoami' }), 'send on the WebSocket that took over failed');
  w.ws().drop(1012);
  w.fire();
  check(w.streams.length === 1 && w.ws().url === 'ws://example.test/notifications/?since=9-0', 'reconnect after the takeover: ' + w.ws().url);
  w.h.close();
  check(w.timers.every((t) => !t.fn), 'close left a timer');
}

scenario = 'no probe after close';
{
  const w = world({ herald: { transport: 'auto', probeAfter: 1000 } });
  w.h.connect();
  for (let i = 0; i < 3; i++) {
    w.ws().drop(1006);
    w.fire();
  }
  w.es().open();
  const sockets = w.sockets.length;
  w.h.close();
  check(w.timers.every((t) => !t.fn) && w.sockets.length === sockets, 'a probe outlived close()');
}

scenario = 'no WebSocket';
{
  const w = world({ websocket: false, herald: { url: 'http://other.test:8000/n/' } });
  w.h.connect();
  check(w.sockets.length === 0 && w.es() && w.es().url === 'http://other.test:8000/n/', 'first attempt: ' + (w.es() && w.es().url));
}

scenario = 'offline';
{
  const w = world({});
  w.h.connect();
  w.ws().drop(1006);
  w.g.navigator.onLine = false;
  w.win.offline();
  check(w.state().state === 'offline' && w.timers.every((t) => !t.fn), 'offline: ' + JSON.stringify(w.state()));
  w.g.navigator.onLine = true;
  w.win.online();
  check(w.state().state === 'connecting' && w.sockets.length === 2, 'back online: ' + JSON.stringify(w.state()));
}

process.stdout.write(JSON.stringify(failures));
`

// TestClientBehaviour drives herald.js with fake transports and timers:
// resume URLs, id order and de-duplication, a position per group (the
// ?since= it builds, the since it adds to a subscribe frame, a resync that
// clears one group), backoff with full jitter and its reset, the SSE
// fallback, send and close.
func TestClientBehaviour(t *testing.T) {
	node := needNode(t)
	dir := t.TempDir()
	client := writeScripts(t, dir)["static/herald.js"]
	if client == "" {
		t.Fatal("static/herald.js is not embedded")
	}
	harness := filepath.Join(dir, "client_harness.js")
	if err := os.WriteFile(harness, []byte(clientHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(t.Context(), node, harness, client)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node harness: %v\n%s", err, stderr.String())
	}
	var failures []string
	if err := json.Unmarshal(out, &failures); err != nil {
		t.Fatalf("harness output %q: %v", out, err)
	}
	for _, f := range failures {
		t.Error(f)
	}
}
