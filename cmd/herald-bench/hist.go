package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// nBuckets covers latencies up to about 2^40 µs with 32 sub-buckets per
// power of two: every recorded value is known to within about 3%.
const nBuckets = 64 + 35*32

// hist is a log-linear latency histogram in microseconds, safe for
// concurrent Record, cheap enough for a million records a second, and
// mergeable across processes.
type hist struct {
	counts [nBuckets]atomic.Uint64
	max    atomic.Uint64
}

func bucketOf(v uint64) int {
	if v < 64 {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v in [2^k, 2^(k+1)), k >= 6
	i := 64 + (k-6)*32 + int(v>>(k-5)) - 32
	if i >= nBuckets {
		return nBuckets - 1
	}
	return i
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	j := i - 64
	k := j/32 + 6
	m := uint64(j%32 + 32)
	return (m+1)<<(k-5) - 1
}

// Record adds one latency.
func (h *hist) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// histData is a histogram as it travels between processes: sparse
// [bucket, count] pairs and the exact maximum.
type histData struct {
	Buckets [][2]uint64 `json:"b,omitempty"`
	MaxUS   uint64      `json:"max_us"`
}

func (h *hist) Data() histData {
	d := histData{MaxUS: h.max.Load()}
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			d.Buckets = append(d.Buckets, [2]uint64{uint64(i), n})
		}
	}
	return d
}

// merged is the sum of several histData.
type merged struct {
	counts [nBuckets]uint64
	total  uint64
	max    uint64
}

func (m *merged) Add(d histData) {
	for _, b := range d.Buckets {
		if b[0] < nBuckets {
			m.counts[b[0]] += b[1]
			m.total += b[1]
		}
	}
	m.max = max(m.max, d.MaxUS)
}

// Quantile returns the q-quantile in milliseconds (the upper edge of its
// bucket, capped at the exact maximum).
func (m *merged) Quantile(q float64) float64 {
	if m.total == 0 {
		return 0
	}
	rank := uint64(q*float64(m.total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, n := range m.counts {
		seen += n
		if seen >= rank {
			return float64(min(bucketHigh(i), m.max)) / 1000
		}
	}
	return float64(m.max) / 1000
}

func (m *merged) MaxMS() float64 { return float64(m.max) / 1000 }

// latencies is the summary every report carries.
type latencies struct {
	N     uint64  `json:"n"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	MaxMS float64 `json:"max_ms"`
}

func (m *merged) Summary() latencies {
	return latencies{N: m.total, P50: m.Quantile(.5), P90: m.Quantile(.9), P99: m.Quantile(.99), P999: m.Quantile(.999), MaxMS: m.MaxMS()}
}
