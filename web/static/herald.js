// herald.js: the browser client of Herald's /notifications/ endpoint. Plain
// JavaScript with no build step and no dependencies; it defines one global,
// Herald.
//
//   <script src="/static/herald.js"></script>
//   const herald = new Herald({ token: jwt });     // every option is optional
//   herald.on('message', (msg) => show(msg));      // each frame, parsed
//   herald.on('resync', (r) => reload(r.group));   // what was missed is gone (no group: in every group)
//   herald.on('state', (s) => render(s.state));    // connecting, open, waiting, offline, closed
//   herald.connect();
//   herald.send({ type: 'subscribe', group: 'team.7' }); // WebSocket only
//
// It reconnects with capped exponential backoff and full jitter, falls back
// to an event stream (EventSource) where WebSockets are unavailable or
// blocked, and tries them again now and then while on the stream.
//
// It keeps one position per group, herald.positions: the last "herald_id"
// seen in each group ("herald_group" names it; a frame without one, from an
// older server, counts for the connection's default group, key ''). Every
// connection resumes all of them (?since=id,group:id,...), a subscribe frame
// sent with send() carries its group's position, a resync naming a group
// forgets only that group's, and it never hands the page an id at or before
// its group's position. README.md describes the options and events.
(function (global) {
  'use strict';

  const DEFAULTS = {
    url: '/notifications/', // endpoint, resolved against the page; ws: or wss: follows http: or https:
    token: null,            // string, or function returning one, sent as ?token= on every connect
    since: '',              // herald_id to resume the default group from, or {group: herald_id}; '' in it is the default group
    groups: [],             // groups to join at every connect (?groups=), for event streams, which cannot subscribe
    transport: 'auto',      // 'auto', 'websocket' or 'eventsource'
    fallbackAfter: 3,       // failed WebSocket attempts, none of them ever open, before 'auto' uses SSE
    probeAfter: 60000,      // ms on an event stream 'auto' fell back to before it tries a WebSocket again, beside it (0: never)
    minDelay: 500,          // ms: backoff ceiling of the first retry, doubled per failed attempt
    maxDelay: 10000,        // ms: most a retry waits
    stableAfter: 5000,      // ms: a connection up this long resets the backoff
  };

  // Close codes by which the server objects to the client itself (bad or too
  // many frames, reading too slowly): retrying at once would only repeat it.
  const NOT_AT_ONCE = [1003, 1007, 1008, 1009, 4008];

  // A group name as the server accepts it; only these can go into ?since=
  // and ?groups=, whose syntax uses ',' and ':'.
  const GROUP = /^[A-Za-z0-9._-]{1,99}$/;

  // idMap makes an empty group -> id map. It has no prototype, so that a
  // group may be called anything the server allows, "__proto__" included.
  function idMap(from) {
    return Object.assign(Object.create(null), from);
  }

  // parseId splits an id "<ms>-<seq>" into its two digit strings, without
  // leading zeros, or returns null. Both parts may exceed 2^53, so they are
  // compared as strings: first by length, then by digit.
  function parseId(id) {
    const m = typeof id === 'string' ? /^(\d{1,20})-(\d{1,20})$/.exec(id) : null;
    return m ? [m[1].replace(/^0+(?=\d)/, ''), m[2].replace(/^0+(?=\d)/, '')] : null;
  }

  function compareDigits(a, b) {
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // compareIds orders two valid ids numerically: -1, 0 or 1.
  function compareIds(a, b) {
    const x = parseId(a), y = parseId(b);
    return compareDigits(x[0], y[0]) || compareDigits(x[1], y[1]);
  }

  // backoff returns the wait before retry number attempt (0 first): a random
  // share rand in [0, 1) of a ceiling that doubles from min up to max.
  function backoff(attempt, min, max, rand) {
    return Math.floor(rand * Math.min(max, min * Math.pow(2, Math.min(attempt, 30))));
  }

  function Herald(options) {
    if (!(this instanceof Herald)) return new Herald(options);
    this.options = Object.assign({}, DEFAULTS, options);
    this.positions = idMap(); // group -> last herald_id seen; '' is the default group of a server that names none
    const since = this.options.since;
    if (typeof since === 'string') {
      if (parseId(since)) this.positions[''] = since;
    } else if (since && typeof since === 'object') {
      for (const g of Object.keys(since)) {
        if ((g === '' || GROUP.test(g)) && parseId(since[g])) this.positions[g] = since[g];
      }
    }
    this.lastId = this.positions[''] || ''; // the last herald_id seen in any group
    this._lastGroup = '';    // the group lastId is from
    this._sent = idMap();    // the positions the current connection asked to resume from
    this.state = 'closed';
    this.transport = '';
    this._handlers = {};
    this._conn = null;       // the WebSocket or EventSource in use
    this._timer = 0;         // the pending retry
    this._stopped = true;    // close() was called, or connect() never was
    this._attempt = 0;       // failed attempts since the last stable connection
    this._openedAt = 0;      // when the current connection opened
    this._wsWorked = false;  // a WebSocket has opened at least once
    this._wsFailures = 0;    // WebSocket attempts that failed before ever opening
    this._probeTimer = 0;    // the pending WebSocket probe, while on a fallback event stream
    this._probe = null;      // a WebSocket being tried beside the event stream
    if (typeof global.addEventListener === 'function') {
      global.addEventListener('online', () => this.reconnect());
      global.addEventListener('offline', () => {
        if (!this._stopped && !this._conn) this._wait(0, 0);
      });
    }
  }

  Herald.compareIds = compareIds;
  Herald.backoff = backoff;

  // on calls fn with every event of type ('message', 'resync' or 'state')
  // and returns a function that stops it.
  Herald.prototype.on = function (type, fn) {
    (this._handlers[type] = this._handlers[type] || []).push(fn);
    return () => {
      this._handlers[type] = this._handlers[type].filter((f) => f !== fn);
    };
  };

  Herald.prototype._emit = function (type, value) {
    for (const fn of this._handlers[type] || []) {
      try {
        fn(value);
      } catch (err) {
        // A failing handler must not stop the others or the connection.
        setTimeout(() => { throw err; });
      }
    }
  };

  Herald.prototype._setState = function (state, extra) {
    this.state = state;
    this._emit('state', Object.assign({ state: state, transport: this.transport, attempt: this._attempt }, extra));
  };

  // connect starts connecting, and keeps the client connected until close().
  Herald.prototype.connect = function () {
    this._stopped = false;
    if (!this._conn && !this._timer) this._open();
    return this;
  };

  // reconnect skips the wait before the next attempt, for a "Retry now"
  // button or the network coming back. It does nothing while connected.
  Herald.prototype.reconnect = function () {
    if (!this._stopped && !this._conn) this._open();
  };

  // close disconnects for good (until connect() is called again).
  Herald.prototype.close = function () {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = 0;
    this._stopProbe();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close(1000);
    this._setState('closed');
  };

  // send writes frame, an object, as JSON on the WebSocket. It returns false,
  // sending nothing, unless a WebSocket is open: event streams are one-way.
  // A subscribe frame without "since" gets its group's position, so that
  // what the group sent meanwhile is replayed; frame itself is not changed.
  // An unsubscribe frame forgets the group's position: subscribing again
  // later starts afresh rather than replaying all that came in between.
  Herald.prototype.send = function (frame) {
    const ws = this._conn;
    if (this.transport !== 'websocket' || !ws || ws.readyState !== 1) return false;
    const group = frame && typeof frame.group === 'string' && frame.group !== '' ? frame.group : null;
    if (group !== null && frame.type === 'subscribe' && frame.since === undefined && this.positions[group] !== undefined) {
      frame = Object.assign({}, frame, { since: this.positions[group] });
    }
    ws.send(JSON.stringify(frame));
    if (group !== null && frame.type === 'unsubscribe') this._forget(group);
    return true;
  };

  // _url builds the endpoint URL for the scheme family ('ws' or 'http') and
  // returns it with a copy of the positions it resumes from: every group's,
  // the default group's bare, the others as group:id.
  Herald.prototype._url = function (family) {
    const u = new URL(this.options.url, global.location.href);
    const secure = u.protocol === 'https:' || u.protocol === 'wss:';
    u.protocol = family + (secure ? 's:' : ':');
    const since = idMap();
    const entries = [];
    if (this.positions['']) {
      since[''] = this.positions[''];
      entries.push(since['']);
    }
    for (const g of Object.keys(this.positions)) {
      if (g === '' || !GROUP.test(g)) continue;
      since[g] = this.positions[g];
      entries.push(g + ':' + since[g]);
    }
    if (entries.length > 0) u.searchParams.set('since', entries.join(','));
    const groups = Array.isArray(this.options.groups)
      ? this.options.groups.filter((g) => typeof g === 'string' && GROUP.test(g)) : [];
    if (groups.length > 0) u.searchParams.set('groups', groups.join(','));
    const token = typeof this.options.token === 'function' ? this.options.token() : this.options.token;
    if (token) u.searchParams.set('token', token);
    return { href: u.href, since: since };
  };

  Herald.prototype._open = function () {
    clearTimeout(this._timer);
    this._timer = 0;
    if (global.navigator && global.navigator.onLine === false) return this._wait(0, 0);
    const t = this.options.transport;
    const useWS = t === 'websocket' || (t === 'auto' && typeof global.WebSocket === 'function' &&
      (this._wsWorked || this._wsFailures < this.options.fallbackAfter));
    this.transport = useWS ? 'websocket' : 'eventsource';
    this._setState('connecting');
    let conn, u;
    try {
      u = this._url(useWS ? 'ws' : 'http');
      conn = useWS ? new global.WebSocket(u.href) : new global.EventSource(u.href);
    } catch (_) {
      return this._lost(1006);
    }
    this._attach(conn, useWS, u.since);
  };

  // _attach makes conn, just created or already open, the connection in
  // use; since is what its URL resumes from.
  Herald.prototype._attach = function (conn, useWS, since) {
    this._conn = conn;
    this._sent = since;
    this.transport = useWS ? 'websocket' : 'eventsource';
    const mine = (fn) => (ev) => { if (this._conn === conn) fn(ev); };
    const opened = () => {
      this._openedAt = Date.now();
      if (useWS) {
        this._wsWorked = true;
        this._wsFailures = 0;
      } else if (this.options.transport === 'auto' && typeof global.WebSocket === 'function' && this.options.probeAfter > 0) {
        // Fell back: the network that blocked WebSockets may let them
        // through now, or later.
        this._probeTimer = setTimeout(() => this._startProbe(), this.options.probeAfter);
      }
      this._setState('open', { resumed: Object.keys(since).length > 0, since: idMap(since) });
    };
    if (conn.readyState === 1) opened();
    else conn.addEventListener('open', mine(opened));
    conn.addEventListener('message', mine((ev) => this._frame(ev.data)));
    if (useWS) {
      conn.addEventListener('close', mine((ev) => this._lost(ev.code)));
      return;
    }
    // An event stream is closed and reopened here, not by EventSource's own
    // fixed-delay retry, so that both transports back off alike.
    conn.addEventListener('close', mine((ev) => {
      let code = 1006;
      try { code = JSON.parse(ev.data).code || code; } catch (_) { /* keep 1006 */ }
      this._lost(code);
    }));
    conn.addEventListener('error', mine(() => this._lost(1006)));
  };

  // _startProbe tries a WebSocket while the event stream it fell back to
  // goes on. If it opens, it takes over: it resumed from the positions
  // held when it started, so nothing is missed, and what both deliver is passed on once. If it
  // fails, the next try comes probeAfter later.
  Herald.prototype._startProbe = function () {
    this._probeTimer = 0;
    if (this._stopped || this.transport !== 'eventsource' || !this._conn) return;
    let ws, u;
    try {
      u = this._url('ws');
      ws = new global.WebSocket(u.href);
    } catch (_) {
      return;
    }
    this._probe = ws;
    ws.addEventListener('open', () => {
      if (this._probe !== ws) return;
      this._probe = null;
      const old = this._conn;
      if (this._stopped || this.transport !== 'eventsource' || !old) {
        ws.close(1000);
        return;
      }
      this._conn = null;
      old.close();
      this._attach(ws, true, u.since);
    });
    ws.addEventListener('close', () => {
      if (this._probe !== ws) return;
      this._probe = null;
      if (!this._stopped && this.transport === 'eventsource' && this._conn) {
        this._probeTimer = setTimeout(() => this._startProbe(), this.options.probeAfter);
      }
    });
  };

  Herald.prototype._stopProbe = function () {
    clearTimeout(this._probeTimer);
    this._probeTimer = 0;
    const ws = this._probe;
    this._probe = null;
    if (ws) ws.close(1000);
  };

  // _frame handles one received frame: a resync frame, or a message that is
  // passed on unless its herald_id is not after its group's position.
  Herald.prototype._frame = function (data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) return;
    if (msg.type === 'resync') {
      // The old position means nothing now; new ids may even be smaller.
      // A resync that names no group (an older server) is for all of them.
      if (typeof msg.group === 'string' && msg.group !== '') {
        this._named();
        this._forget(msg.group);
      } else {
        for (const g of Object.keys(this.positions)) delete this.positions[g];
        this.lastId = '';
      }
      this._emit('resync', msg);
      return;
    }
    if (parseId(msg.herald_id)) {
      let g = '';
      if (typeof msg.herald_group === 'string' && GROUP.test(msg.herald_group)) {
        g = msg.herald_group;
        this._named();
      }
      const at = this.positions[g];
      if (at !== undefined && compareIds(msg.herald_id, at) <= 0) return;
      this.positions[g] = msg.herald_id;
      this.lastId = msg.herald_id;
      this._lastGroup = g;
    }
    this._emit('message', msg);
  };

  // _forget drops group's position, and lastId if it came from there.
  Herald.prototype._forget = function (group) {
    delete this.positions[group];
    if (this._lastGroup === group) this.lastId = '';
  };

  // _named is called when the server names the group of a frame. A server
  // that does has resumed the default-group position '' this connection
  // sent, if any, as soon as it connected, and reports it under the
  // group's name from then on: sending it again would only repeat that.
  Herald.prototype._named = function () {
    if (this._sent[''] !== undefined && this.positions[''] === this._sent['']) this._forget('');
  };

  // _lost schedules the next attempt after the connection ended with code.
  Herald.prototype._lost = function (code) {
    const conn = this._conn;
    this._conn = null;
    this._stopProbe();
    if (conn && conn.readyState !== 2 && conn.readyState !== 3) conn.close();
    if (this._openedAt && Date.now() - this._openedAt >= this.options.stableAfter) this._attempt = 0;
    if (this.transport === 'websocket' && !this._openedAt && !this._wsWorked) this._wsFailures++;
    this._openedAt = 0;
    if (this._stopped) return;
    let n = this._attempt++;
    if (NOT_AT_ONCE.indexOf(code) >= 0) n = Math.max(n, 2);
    const o = this.options;
    this._wait(backoff(n, o.minDelay, o.maxDelay, Math.random()), code);
  };

  // _wait retries after delay ms, or once the network is back if the
  // browser says it is offline.
  Herald.prototype._wait = function (delay, code) {
    clearTimeout(this._timer);
    this._timer = 0;
    if (global.navigator && global.navigator.onLine === false) {
      this._setState('offline', { code: code });
      return;
    }
    this._timer = setTimeout(() => this._open(), delay);
    this._setState('waiting', { code: code, delay: delay });
  };

  global.Herald = Herald;
})(globalThis);
