// Herald's page script. Plain browser JavaScript, no build step and no
// dependencies but herald.js, loaded before it, which keeps the connection to
// /notifications/. The feed is filled from GET /posts at load and whenever
// the connection could not account for what it missed, and posts are
// published with POST /posts. All user text reaches the DOM through
// textContent only.
(function () {
  'use strict';

  const RECENT_LIMIT = 50;     // posts asked of GET /posts at load
  const FEED_LIMIT = 200;      // posts kept on the page, and asked for after a gap
  const REQUEST_TIMEOUT_MS = 15000;
  const RECENT_RETRY_MS = 10000; // retry a failed GET /posts this often
  const AUTHOR_KEY = 'herald.author';

  // postId reads a post id, a number or a string of digits, or returns null.
  function postId(raw) {
    let id = raw;
    if (typeof id === 'string' && /^\d{1,15}$/.test(id)) id = Number(id);
    return Number.isSafeInteger(id) ? id : null;
  }

  // normalizePost turns a post from the API or a frame into
  // {id, key, author, message, createdAt}, or null when it has no usable id.
  // key is what the feed shows it once by: its id, as a string.
  function normalizePost(raw) {
    if (!raw || typeof raw !== 'object') return null;
    const id = postId(raw.id);
    if (id === null) return null;
    return makePost(raw, id, String(id));
  }

  function makePost(raw, id, key) {
    let createdAt = null;
    if (typeof raw.created_at === 'string' && raw.created_at !== '') {
      const d = new Date(raw.created_at);
      if (!Number.isNaN(d.getTime())) createdAt = d;
    }
    return {
      id: id,
      key: key,
      author: raw.author == null ? '' : String(raw.author),
      message: raw.message == null ? '' : String(raw.message),
      createdAt: createdAt,
    };
  }

  // postFromMessage reads one message from herald.js. It returns a post for a
  // "name.gossip" notification and null for anything else, so new frame types
  // on the server never break an old page. A notification without a post id
  // (a backend's group send) is shown too, if it has a message: with id null,
  // keyed by its herald_id when it has one, or by nothing (key null: every
  // copy is shown; herald.js already drops repeats of ids it saw).
  function postFromMessage(msg) {
    if (!msg || typeof msg !== 'object' || msg.type !== 'name.gossip') return null;
    const raw = { author: msg.sender, message: msg.message, created_at: msg.created_at };
    const id = postId(msg.id);
    if (id !== null) return makePost(raw, id, String(id));
    if (typeof msg.message !== 'string' || msg.message === '') return null;
    const key = typeof msg.herald_id === 'string' && msg.herald_id !== ''
      ? 'h:' + (typeof msg.herald_group === 'string' ? msg.herald_group : '') + '/' + msg.herald_id
      : null;
    return makePost(raw, null, key);
  }

  const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

  // relativeTime renders date as "just now", "5 minutes ago", ... and falls
  // back to a date after a week. Small clock skew ahead of us reads "just now".
  function relativeTime(date, now) {
    const secs = Math.round((date.getTime() - now.getTime()) / 1000);
    if (secs > -45) return 'just now';
    const abs = -secs;
    if (abs < 3600) return relativeFormat.format(-Math.max(1, Math.round(abs / 60)), 'minute');
    if (abs < 86400) return relativeFormat.format(-Math.round(abs / 3600), 'hour');
    if (abs < 7 * 86400) return relativeFormat.format(-Math.round(abs / 86400), 'day');
    return date.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
  }

  // hue picks a stable avatar colour for a name.
  function hue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return h % 360;
  }

  // Without a document (node, in web_test.go) expose the pure parts and stop.
  if (typeof document === 'undefined') {
    globalThis.heraldInternals = { normalizePost, postFromMessage, relativeTime, hue };
    return;
  }

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    statusLabel: document.querySelector('#status .status-label'),
    statusDetail: document.querySelector('#status .status-detail'),
    retry: $('retry'),
    feed: $('feed'),
    empty: $('feed-empty'),
    notice: $('feed-notice'),
    form: $('post-form'),
    author: $('author'),
    message: $('message'),
    send: $('send'),
    error: $('form-error'),
  };

  // ---- Feed ---------------------------------------------------------------

  const shown = new Map(); // post key -> <li>, so each post appears once
  let unkeyed = 0;         // posts shown with no key, each given its own
  let cleared = null;      // keys clearFeed removed, until the reload answers: not news when they come back
  let recentLoaded = false;  // a GET /posts has succeeded
  let recentSettled = false; // a GET /posts has finished, either way

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function renderPost(post) {
    const li = el('li', 'post');
    if (post.id !== null) li.dataset.postId = String(post.id);

    const name = post.author.trim();
    const avatar = el('span', 'avatar');
    avatar.setAttribute('aria-hidden', 'true');
    avatar.textContent = name ? Array.from(name)[0].toUpperCase() : '?';
    avatar.style.setProperty('--hue', String(hue(name)));

    const head = el('div', 'post-head');
    const author = el('span', 'author');
    author.textContent = post.author;
    if (!name) author.classList.add('is-anonymous');

    const when = post.createdAt || new Date();
    const time = el('time', 'time');
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
    time.textContent = relativeTime(when, new Date());
    head.append(author, time);

    const message = el('p', 'message');
    message.textContent = post.message;

    li.append(avatar, head, message);
    return li;
  }

  // addPost puts post in the feed in id order (newest on top) unless its key
  // is already shown. A post without an id goes on top, above the posts
  // shown so far, and below those with a larger id that come later. New
  // arrivals are highlighted.
  function addPost(post, highlight) {
    if (!post || (post.key !== null && shown.has(post.key))) return;
    const key = post.key !== null ? post.key : 'n:' + ++unkeyed;
    const first = ui.feed.firstElementChild;
    const order = post.id !== null ? post.id : Math.floor(first ? Number(first.dataset.order) : 0) + 0.5;
    const last = ui.feed.lastElementChild;
    if (shown.size >= FEED_LIMIT && last && order < Number(last.dataset.order)) return;

    const li = renderPost(post);
    li.dataset.key = key;
    li.dataset.order = String(order);
    let before = null;
    for (const child of ui.feed.children) {
      if (Number(child.dataset.order) <= order) {
        before = child;
        break;
      }
    }
    ui.feed.insertBefore(li, before);
    shown.set(key, li);

    if (highlight) {
      li.classList.add('is-new');
      li.addEventListener('animationend', () => li.classList.remove('is-new'), { once: true });
    }
    while (shown.size > FEED_LIMIT) {
      const oldest = ui.feed.lastElementChild;
      shown.delete(oldest.dataset.key);
      oldest.remove();
    }
    updateEmpty();
  }

  // clearFeed removes every post, for a reload that replaces the feed: after
  // a resync, or a connection that could not resume, what the page shows
  // may belong to a server that is gone (one whose post ids started over
  // when it restarted), and keeping it would hide new posts with those ids.
  function clearFeed() {
    cleared = new Set([...(cleared || []), ...shown.keys()]);
    for (const li of shown.values()) li.remove();
    shown.clear();
    updateEmpty();
  }

  function updateEmpty() {
    if (shown.size > 0) {
      ui.empty.hidden = true;
      return;
    }
    ui.empty.hidden = false;
    if (recentLoaded) ui.empty.textContent = 'No posts yet. Be the first to say something.';
    else if (recentSettled) ui.empty.textContent = 'Nothing to show yet. New posts will appear here as they arrive.';
    else ui.empty.textContent = 'Loading recent posts…';
  }

  function setNotice(text) {
    ui.notice.textContent = text;
  }

  function refreshTimes() {
    const now = new Date();
    for (const time of ui.feed.querySelectorAll('time')) {
      time.textContent = relativeTime(new Date(time.dateTime), now);
    }
  }

  // errorText reads the server's {"error": "..."} body, or says what failed.
  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === 'string' && body.error.trim() !== '') return body.error;
    } catch (_) {
      // Not JSON: fall through to the status line.
    }
    return 'The server answered ' + res.status + (res.statusText ? ' ' + res.statusText : '') + '.';
  }

  let recentRequest = null;
  let recentLimit = 0; // the limit of recentRequest
  let recentRetry = 0;

  // loadRecent merges the newest limit posts into the feed. A newer call
  // supersedes one still in flight, asking for at least as many, so that its
  // answer is a superset. A failed load is retried every RECENT_RETRY_MS until
  // one succeeds.
  async function loadRecent(limit) {
    clearTimeout(recentRetry);
    if (recentRequest) {
      recentRequest.abort();
      limit = Math.max(limit, recentLimit);
    }
    const ctl = new AbortController();
    recentRequest = ctl;
    recentLimit = limit;
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const res = await fetch('/posts?limit=' + limit, {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        signal: ctl.signal,
      });
      if (!res.ok) throw new Error(await errorText(res));
      const body = await res.json();
      if (recentRequest !== ctl) return; // superseded: its answer may be older than the feed
      const posts = body && Array.isArray(body.posts) ? body.posts : [];
      // Posts missed while disconnected are news; the first load is not.
      const highlight = recentLoaded;
      const known = cleared || new Set();
      cleared = null;
      ui.feed.setAttribute('aria-busy', 'true');
      for (const raw of posts) {
        const post = normalizePost(raw);
        addPost(post, highlight && post !== null && !known.has(post.key));
      }
      ui.feed.setAttribute('aria-busy', 'false');
      recentLoaded = true;
      setNotice('');
    } catch (err) {
      if (recentRequest !== ctl) return; // superseded by a newer load
      const why = (ctl.signal.aborted ? 'the server took too long' : String(err.message)).replace(/[.\s]+$/, '');
      setNotice('Couldn’t load recent posts: ' + why + '. Retrying…');
      recentRetry = setTimeout(() => loadRecent(limit), RECENT_RETRY_MS);
    } finally {
      clearTimeout(timer);
      if (recentRequest === ctl) {
        recentRequest = null;
        recentSettled = true;
      }
      updateEmpty();
    }
  }

  // ---- Connection ---------------------------------------------------------

  // herald.js reconnects, resumes from the last message id it saw and drops
  // repeats; the page only has to reload the feed when that cannot cover a
  // gap: at a connection that did not resume (the first, or one after
  // messages that carried no id), and on resync. Such a reload replaces the
  // feed: it is cleared first, and what the stream brings meanwhile is kept.
  // Posts are keyed by id, so what both the reload and the stream bring is
  // shown once.
  const herald = new Herald();
  let everOpened = false;
  let tickTimer = 0;
  let retryAt = 0;

  // reload replaces the feed with the newest posts.
  function reload() {
    clearFeed();
    loadRecent(FEED_LIMIT);
  }

  function setStatus(state, label, detail) {
    ui.status.dataset.state = state;
    ui.status.classList.toggle('is-offline', label === 'Offline');
    ui.statusLabel.textContent = label;
    ui.statusDetail.textContent = detail || '';
    ui.retry.hidden = !(herald.state === 'waiting' || herald.state === 'offline');
  }

  function showCountdown() {
    const secs = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
    setStatus('reconnecting', 'Reconnecting', 'in ' + secs + 's');
  }

  function onState(s) {
    clearInterval(tickTimer);
    tickTimer = 0;
    switch (s.state) {
      case 'connecting':
        if (!everOpened && s.attempt === 0) setStatus('connecting', 'Connecting…');
        else setStatus('reconnecting', 'Reconnecting…');
        break;
      case 'open':
        setStatus('open', 'Connected', s.transport === 'eventsource' ? 'receive only' : '');
        if (!s.resumed && everOpened) reload();
        else if (!s.resumed) loadRecent(RECENT_LIMIT);
        everOpened = true;
        break;
      case 'waiting':
        retryAt = Date.now() + s.delay;
        tickTimer = setInterval(showCountdown, 250);
        showCountdown();
        break;
      case 'offline':
        setStatus('reconnecting', 'Offline', 'waiting for network');
        break;
      default:
        setStatus('closed', 'Disconnected');
    }
  }

  // ---- Form ---------------------------------------------------------------

  function loadAuthor() {
    try {
      return localStorage.getItem(AUTHOR_KEY) || '';
    } catch (_) {
      return ''; // storage disabled
    }
  }

  function saveAuthor(name) {
    try {
      localStorage.setItem(AUTHOR_KEY, name);
    } catch (_) {
      // storage disabled or full: the name is just not remembered
    }
  }

  function showError(text, field) {
    ui.error.textContent = text;
    for (const f of [ui.author, ui.message]) {
      if (f === field) {
        f.setAttribute('aria-invalid', 'true');
        f.setAttribute('aria-describedby', 'form-error');
      } else {
        clearInvalid(f);
      }
    }
    if (field) field.focus();
  }

  function clearInvalid(field) {
    field.removeAttribute('aria-invalid');
    if (field === ui.message) field.setAttribute('aria-describedby', 'send-hint');
    else field.removeAttribute('aria-describedby');
  }

  function clearError() {
    ui.error.textContent = '';
    clearInvalid(ui.author);
    clearInvalid(ui.message);
  }

  let sending = false;

  function setSending(on) {
    sending = on;
    ui.send.disabled = on;
    ui.send.textContent = on ? 'Sending…' : 'Send';
    ui.form.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // draft is the post being sent, with the Idempotency-Key its retries
  // share; it is cleared once the server has answered with success.
  let draft = null;

  function newKey() {
    const c = globalThis.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    let key = '';
    for (let i = 0; i < 4; i++) key += Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, '0');
    return key;
  }

  async function submit(ev) {
    ev.preventDefault();
    if (sending) return;
    const author = ui.author.value.trim();
    const message = ui.message.value.trim();
    if (!author) return showError('Please enter your name.', ui.author);
    if (!message) return showError('Write a message first.', ui.message);

    clearError();
    setSending(true);
    // A retry of the same text (after a timeout or a lost connection) sends
    // the same key, so the server stores the post once even if the first
    // request reached it.
    if (!draft || draft.author !== author || draft.message !== message) {
      draft = { author: author, message: message, key: newKey() };
    }
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    try {
      const res = await fetch('/posts', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Idempotency-Key': draft.key },
        body: JSON.stringify({ author: author, message: message }),
        signal: ctl.signal,
      });
      if (!res.ok) {
        showError(await errorText(res));
        return;
      }
      draft = null;
      saveAuthor(author);
      ui.message.value = '';
      let post = null;
      try {
        post = normalizePost(await res.json());
      } catch (_) {
        // Saved, but the answer was unreadable: the WebSocket will bring it.
      }
      addPost(post, true);
      ui.message.focus();
    } catch (_) {
      showError(ctl.signal.aborted
        ? 'The server took too long to answer. Please try again.'
        : 'Couldn’t reach the server. Check your connection and try again.');
    } finally {
      clearTimeout(timer);
      setSending(false);
    }
  }

  // ---- Start --------------------------------------------------------------

  function start() {
    ui.author.value = loadAuthor();
    ui.author.addEventListener('change', () => saveAuthor(ui.author.value.trim()));
    ui.form.addEventListener('submit', submit);
    for (const f of [ui.author, ui.message]) {
      f.addEventListener('input', () => {
        if (f.hasAttribute('aria-invalid')) clearError();
      });
    }
    // Enter in the name field moves on rather than sending half a post.
    ui.author.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.isComposing) {
        ev.preventDefault();
        ui.message.focus();
      }
    });
    ui.message.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && !ev.isComposing) {
        ev.preventDefault();
        if (ui.form.requestSubmit) ui.form.requestSubmit(ui.send);
        else ui.send.click();
      }
    });
    const platform = (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || '';
    if (/mac|iphone|ipad/i.test(platform)) {
      document.querySelector('#send-hint .hint-mod').textContent = '⌘';
    }

    // herald.js itself waits for the network while the browser is offline.
    ui.retry.addEventListener('click', () => herald.reconnect());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && herald.state === 'waiting' && retryAt - Date.now() > 1000) {
        herald.reconnect();
      }
    });
    setInterval(refreshTimes, 30000);

    herald.on('state', onState);
    herald.on('message', (msg) => addPost(postFromMessage(msg), true));
    herald.on('resync', reload);
    updateEmpty();
    herald.connect();
    loadRecent(RECENT_LIMIT);
  }

  start();
})();
