package main

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// chaosSummary is the JSON summary of a run.
type chaosSummary struct {
	Pass       bool                      `json:"pass"`
	Seed       uint64                    `json:"seed"`
	Duration   string                    `json:"duration"`
	Elapsed    string                    `json:"elapsed"`
	Redis      string                    `json:"redis"`
	Faults     []string                  `json:"faults"`
	Injected   map[string]int            `json:"injected"`
	FaultLog   []faultRec                `json:"fault_log"`
	Published  map[string]map[string]int `json:"published"` // group -> outcome -> count
	Clients    []clientSummary           `json:"clients"`
	StallCuts  int                       `json:"stall_cuts_4008"`
	StallBytes int                       `json:"stall_stream_bytes"`
	Excused    int                       `json:"missing_excused_by_resync"`
	Violations map[string]int            `json:"violations"` // by promise
	Examples   map[string][]string       `json:"examples"`
	Replay     string                    `json:"replay"`
}

type clientSummary struct {
	Name        string         `json:"name"`
	Connections int            `json:"connections"`
	Received    int            `json:"received"`
	Resyncs     int            `json:"resyncs"`
	Dropped     int            `json:"dropped_as_seen"`
	NoID        int            `json:"history_frames_without_id"`
	Closes      map[string]int `json:"closes"` // by close code
	Ends        []string       `json:"ends,omitempty"`
}

func (h *chaosRun) summary(elapsed time.Duration) chaosSummary {
	rs := chaosSummary{
		Pass: h.violations.count() == 0, Seed: h.cfg.seed, Duration: h.cfg.duration.String(),
		Elapsed: elapsed.Round(time.Second).String(), Redis: "single", Faults: h.cfg.faults,
		Injected: map[string]int{}, FaultLog: h.faultLog, Published: map[string]map[string]int{},
		StallCuts: h.stallCuts, StallBytes: h.stallStreamBytes(), Excused: h.excused, Violations: map[string]int{}, Examples: map[string][]string{},
		Replay: replayCommand(h.cfg),
	}
	if h.cfg.cluster {
		rs.Redis = "cluster"
	}
	for _, f := range h.faultLog {
		rs.Injected[f.Class]++
	}
	for _, g := range append(slices.Clone(chaosHistoryGroups), chaosLive) {
		for _, p := range h.ledger.group(g) {
			name := g
			if p.key.src == postSrc {
				name = "posts"
			}
			if rs.Published[name] == nil {
				rs.Published[name] = map[string]int{}
			}
			rs.Published[name][p.outcome]++
		}
	}
	for _, c := range h.clients {
		cs := clientSummary{Name: c.name, Closes: map[string]int{}}
		for _, s := range c.snapshot() {
			cs.Connections++
			cs.Dropped += s.dropped
			cs.NoID += s.noID
			if !s.end.IsZero() && s.end.Before(h.stoppedAt) {
				cs.Closes[closeName(s.code)]++
				if len(cs.Ends) < 5 {
					cs.Ends = append(cs.Ends, s.why)
				}
			}
			for _, its := range s.items {
				for _, it := range its {
					if it.resync {
						cs.Resyncs++
					} else {
						cs.Received++
					}
				}
			}
		}
		rs.Clients = append(rs.Clients, cs)
	}
	for p, l := range h.violations.byPromise() {
		rs.Violations[p] = len(l)
		rs.Examples[p] = l[:min(len(l), 10)]
	}
	return rs
}

func closeName(code int) string {
	if code < 0 {
		return "no close frame"
	}
	return strconv.Itoa(code)
}

// replayCommand is the command that runs the same schedule again.
func replayCommand(cfg chaosConfig) string {
	redis := ""
	if cfg.cluster {
		redis = "HERALD_CHAOS_REDIS=cluster "
	}
	return fmt.Sprintf("%sHERALD_CHAOS_SEED=%d HERALD_CHAOS_DURATION=%v HERALD_CHAOS_FAULTS=%s go test -count=1 -timeout 30m -run '^TestChaos$' ./cmd/herald/",
		redis, cfg.seed, cfg.duration, faultsArg(cfg.faults))
}
