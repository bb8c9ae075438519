package main

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The promises the oracle checks, as docs/DELIVERY.md and
// docs/NOTIFIER.md state them.
var promises = map[string]string{
	"a":      "every accepted API message reaches every resuming client subscribed when it was sent, in order, once, or the client is told resync for that group",
	"b":      "every committed post reaches every resuming client once, in commit order, or the client is told resync",
	"c":      "a plain client connected throughout gets every accepted message and post once, in order, or is told resync",
	"d":      "nothing answered as refused (4xx, or 429/5xx with no later success of the same Idempotency-Key) is delivered",
	"e":      "the client that stops reading is cut with 4008, and no other client is",
	"resync": "a resync names its group",
	"settle": "once the faults stop, every instance is ready and every client catches up",
	"setup":  "the soak could start",
}

// violations collects what broke, grouped so that a thousand lost
// messages print as one line.
type violations struct {
	mu    sync.Mutex
	lines map[string][]string // by promise
	n     int
}

func (v *violations) add(promise, client, what string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.lines == nil {
		v.lines = map[string][]string{}
	}
	if client != "" {
		what = client + ": " + what
	}
	v.lines[promise] = append(v.lines[promise], what)
	v.n++
}

func (v *violations) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.n
}

func (v *violations) byPromise() map[string][]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string][]string{}
	for p, l := range v.lines {
		out[p] = slices.Clone(l)
	}
	return out
}

func (v *violations) String() string {
	var b strings.Builder
	for _, p := range slices.Sorted(maps.Keys(v.byPromise())) {
		l := v.byPromise()[p]
		fmt.Fprintf(&b, "promise (%s) %s: %d violations\n", p, promises[p], len(l))
		for i, s := range l {
			if i == 25 {
				fmt.Fprintf(&b, "  ... and %d more\n", len(l)-i)
				break
			}
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

// keyRanges prints keys as compact runs: gossip#3-#7, post#9.
func keyRanges(keys []msgKey) string {
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].src != keys[j].src {
			return keys[i].src < keys[j].src
		}
		return keys[i].seq < keys[j].seq
	})
	var parts []string
	for i := 0; i < len(keys); {
		j := i
		for j+1 < len(keys) && keys[j+1].src == keys[i].src && keys[j+1].seq == keys[j].seq+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%s#%d-#%d", keys[i].src, keys[i].seq, keys[j].seq))
		} else {
			parts = append(parts, keys[i].String())
		}
		i = j + 1
	}
	if len(parts) > 12 {
		parts = append(parts[:12], fmt.Sprintf("... (%d runs)", len(parts)))
	}
	return strings.Join(parts, ", ")
}

// check runs the oracle over every client.
func (h *chaosRun) check(settled bool) {
	stallCuts := 0
	for _, c := range h.clients {
		sessions := c.snapshot()
		for i, s := range sessions {
			if c.kind == kindStall {
				if s.code == 4008 {
					stallCuts++
				}
				continue
			}
			if s.code == 4008 {
				h.violations.add("e", c.name, fmt.Sprintf("connection %d to %s was cut with 4008 (%s) at %s", i+1, s.addr, s.why, s.end.Format("15:04:05.000")))
			}
			if s.noGroup > 0 && len(c.groups) > 1 {
				h.violations.add("resync", c.name, fmt.Sprintf("connection %d to %s got %d resync frames naming no group, in %d groups", i+1, s.addr, s.noGroup, len(c.groups)))
			}
		}
		if c.kind == kindStall {
			continue
		}
		for _, g := range c.groups {
			if c.resumes() {
				h.checkResuming(c, g, sessions)
			} else {
				h.checkPlain(c, g, sessions)
			}
		}
	}
	// The stalled client cannot read the close frame of a cut: the server
	// gives up writing it to a full socket. The instances' logs say it.
	cuts := 0
	h.mu.Lock()
	for _, in := range h.all {
		cuts += strings.Count(in.log.String(), "client too slow")
	}
	h.mu.Unlock()
	othersCut := 0
	for _, c := range h.clients {
		if c.kind == kindStall {
			continue
		}
		for _, s := range c.snapshot() {
			if s.code == 4008 {
				othersCut++
			}
		}
	}
	stallConns := len(h.clientsOf(kindStall)[0].snapshot())
	switch {
	case cuts == 0 && stallCuts == 0 && h.stallStreamBytes() < chaosStallProof:
		// Faults refused or held most of its stream: not reaching the
		// bound proves nothing either way.
	case cuts == 0 && stallCuts == 0:
		h.violations.add("e", kindStall+"-0", fmt.Sprintf("never cut with 4008 (none seen, no instance logged a client too slow), though %d bytes were sent to it while it did not read", h.stallStreamBytes()))
	case cuts > stallConns+othersCut:
		h.violations.add("e", "", fmt.Sprintf("instances cut %d clients as too slow; the stalled client had %d connections and other clients saw %d cuts", cuts, stallConns, othersCut))
	}
	h.stallCuts = max(stallCuts, cuts-othersCut)
}

// chaosStallProof is how much of the stalled client's stream must be
// accepted before it must have been cut: its queue (HERALD_QUEUE_BYTES,
// 1 MiB) and both loopback socket buffers (a few MiB each at most),
// with room to spare.
const chaosStallProof = 16 << 20

// stallStreamBytes is about how many bytes the API accepted for the
// stalled client's group.
func (h *chaosRun) stallStreamBytes() int {
	if h.slow == nil {
		return 0
	}
	h.slow.mu.Lock()
	defer h.slow.mu.Unlock()
	return h.slow.accepted * h.slow.pad
}

func (h *chaosRun) clientsOf(kind string) []*chaosClient {
	var out []*chaosClient
	for _, c := range h.clients {
		if c.kind == kind {
			out = append(out, c)
		}
	}
	return out
}

// checkResuming checks the whole of a resuming client's stream in g,
// across its connections: since it resumes, it is owed every message
// accepted after it first joined g (or after it last had to join afresh,
// with no id to resume from).
func (h *chaosRun) checkResuming(c *chaosClient, g string, sessions []*chaosConn) {
	var stream []chaosItem
	var since time.Time
	for _, s := range sessions {
		if at, ok := s.joined[g]; ok && (s.since[g] == "" || since.IsZero()) {
			since = at
			stream = stream[:0] // what came before is not owed
		}
		stream = append(stream, s.items[g]...)
	}
	if since.IsZero() {
		h.violations.add("setup", c.name, "never joined "+g)
		return
	}
	h.checkStream(c.name, g, stream, since, true, "")
}

// checkPlain checks each connection of a plain client on its own: only
// one still open at the end is owed what was accepted while it was.
func (h *chaosRun) checkPlain(c *chaosClient, g string, sessions []*chaosConn) {
	for i, s := range sessions {
		at, ok := s.joined[g]
		open := s.end.IsZero() || !s.end.Before(h.stoppedAt)
		if !ok {
			at = s.end
		}
		h.checkStream(c.name, g, s.items[g], at, open && ok, fmt.Sprintf(" on connection %d to %s", i+1, s.addr))
	}
}

// checkStream checks one stream of items in g: nothing refused or
// unknown to the publishers, nothing twice, each source in order, and,
// if owed, every message accepted after since, unless a resync arrived
// where it should have been.
func (h *chaosRun) checkStream(client, g string, stream []chaosItem, since time.Time, owed bool, where string) {
	promise := func(k msgKey) string {
		switch {
		case client[:len(kindPlain)] == kindPlain:
			return "c"
		case k.src == postSrc:
			return "b"
		}
		return "a"
	}
	type pos struct{ seq, idx int }
	bySrc := map[string][]pos{}
	resyncs := make([]int, len(stream)+1) // resyncs before index i
	seen := map[msgKey]int{}
	lastSeq := map[string]int{}
	var refused, stray []string
	twice, disorder := map[string][]string{}, map[string][]string{}
	for i, it := range stream {
		resyncs[i+1] = resyncs[i]
		if it.resync {
			resyncs[i+1]++
			lastSeq = map[string]int{} // order starts again after a resync
			continue
		}
		p := h.ledger.get(it.key)
		switch {
		case p == nil:
			stray = append(stray, it.key.String())
		case p.outcome == outRefused:
			refused = append(refused, fmt.Sprintf("%s (answers: %s)", it.key, strings.Join(p.answers, "; ")))
		}
		if j, ok := seen[it.key]; ok {
			var answers string
			if p != nil {
				answers = strings.Join(p.answers, "; ")
			}
			twice[promise(it.key)] = append(twice[promise(it.key)], fmt.Sprintf("%s at %d (id %q) and %d (id %q), publisher was told: %s", it.key, j, stream[j].id, i, it.id, answers))
			continue
		}
		seen[it.key] = i
		if l, ok := lastSeq[it.key.src]; ok && it.key.seq < l {
			disorder[promise(it.key)] = append(disorder[promise(it.key)], fmt.Sprintf("%s after #%d at %d", it.key, l, i))
		}
		lastSeq[it.key.src] = max(lastSeq[it.key.src], it.key.seq)
		bySrc[it.key.src] = append(bySrc[it.key.src], pos{it.key.seq, i})
	}
	for src := range bySrc {
		slices.SortFunc(bySrc[src], func(a, b pos) int { return a.seq - b.seq })
	}
	report := func(pr string, list []string, what string) {
		if len(list) == 0 {
			return
		}
		if len(list) > 8 {
			list = append(list[:8], fmt.Sprintf("... %d in all", len(list)))
		}
		h.violations.add(pr, client, fmt.Sprintf("%s in %s%s: %s", what, g, where, strings.Join(list, "; ")))
	}
	report("d", refused, "delivered though refused")
	report("d", stray, "delivered though never published")
	for pr, l := range twice {
		report(pr, l, "received twice")
	}
	for pr, l := range disorder {
		report(pr, l, "out of order")
	}
	if !owed {
		return
	}
	missing := map[string][]msgKey{}
	excused := 0
	for _, p := range h.ledger.group(g) {
		if p.outcome != outAccepted || !p.start.After(since) {
			continue
		}
		if _, ok := seen[p.key]; ok {
			continue
		}
		// Where it should have been: between the messages of its source
		// around it. A resync there told the client.
		list := bySrc[p.key.src]
		k := sort.Search(len(list), func(i int) bool { return list[i].seq > p.key.seq })
		from, to := 0, len(stream)
		if k > 0 {
			from = list[k-1].idx
		}
		if k < len(list) {
			to = list[k].idx
		}
		if from <= to && resyncs[to]-resyncs[from] > 0 {
			excused++
			continue
		}
		missing[promise(p.key)] = append(missing[promise(p.key)], p.key)
	}
	for pr, keys := range missing {
		first := h.ledger.get(keys[0])
		h.violations.add(pr, client, fmt.Sprintf("%d accepted messages in %s%s never received, and no resync where they belong: %s (first sent %s, answers: %s)",
			len(keys), g, where, keyRanges(keys), first.start.Format("15:04:05.000"), strings.Join(first.answers, "; ")))
	}
	h.excused += excused
}
