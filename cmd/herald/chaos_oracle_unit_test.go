package main

import (
	"strings"
	"testing"
	"time"
)

// TestChaosOracle feeds the soak's oracle made-up streams, so that each
// kind of broken promise is known to be reported, and a resync where a
// message belongs excuses it.
func TestChaosOracle(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	newRun := func() *chaosRun {
		h := &chaosRun{ledger: newChaosLedger()}
		for seq := 1; seq <= 5; seq++ {
			p := h.ledger.begin(msgKey{"gossip", seq}, "gossip", t0.Add(time.Duration(seq)*time.Second))
			h.ledger.set(p, outAccepted, "202 sent")
		}
		p := h.ledger.begin(msgKey{"gossip", 6}, "gossip", t0.Add(6*time.Second))
		h.ledger.set(p, outRefused, "503 unavailable")
		return h
	}
	msg := func(seq int) chaosItem { return chaosItem{key: msgKey{"gossip", seq}, id: "x"} }
	resync := chaosItem{resync: true}
	for _, tc := range []struct {
		name   string
		stream []chaosItem
		want   []string // promise: substring, in the violations' text
	}{
		{"all once in order", []chaosItem{msg(1), msg(2), msg(3), msg(4), msg(5)}, nil},
		{"lost", []chaosItem{msg(1), msg(2), msg(4), msg(5)}, []string{"(a)", "gossip#3 "}},
		{"lost at the end", []chaosItem{msg(1), msg(2), msg(3)}, []string{"(a)", "gossip#4-#5"}},
		{"resync where it belongs", []chaosItem{msg(1), msg(2), resync, msg(4), msg(5)}, nil},
		{"resync too late", []chaosItem{msg(1), msg(2), msg(4), resync, msg(5)}, []string{"(a)", "gossip#3 "}},
		{"twice", []chaosItem{msg(1), msg(2), msg(3), msg(3), msg(4), msg(5)}, []string{"(a)", "received twice"}},
		{"out of order", []chaosItem{msg(1), msg(3), msg(2), msg(4), msg(5)}, []string{"(a)", "out of order"}},
		{"refused yet delivered", []chaosItem{msg(1), msg(2), msg(3), msg(4), msg(5), msg(6)}, []string{"(d)", "503 unavailable"}},
		{"never published", []chaosItem{msg(1), msg(2), msg(3), msg(4), msg(5), msg(9)}, []string{"(d)", "never published"}},
	} {
		h := newRun()
		h.checkStream("ws-resume-0", "gossip", tc.stream, t0, true, "")
		got := h.violations.String()
		if len(tc.want) == 0 {
			if h.violations.count() != 0 {
				t.Errorf("%s: reported\n%s", tc.name, got)
			}
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: report lacks %q:\n%s", tc.name, w, got)
			}
		}
	}
	// A plain client is held to promise (c), and messages sent before it
	// joined are not owed to it.
	h := newRun()
	h.checkStream("ws-plain-0", "gossip", []chaosItem{msg(4), msg(5)}, t0.Add(3500*time.Millisecond), true, " on connection 1")
	if h.violations.count() != 0 {
		t.Errorf("plain client owed what was sent before it joined:\n%s", h.violations.String())
	}
	h.checkStream("ws-plain-0", "gossip", []chaosItem{msg(4)}, t0.Add(3500*time.Millisecond), true, " on connection 1")
	if got := h.violations.String(); !strings.Contains(got, "(c)") || !strings.Contains(got, "gossip#5") {
		t.Errorf("a plain client's loss is not reported under (c):\n%s", got)
	}
}
