package router

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/heraldhq/herald/channellayer"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/groups"
)

// Metrics exposes an instance's counters in the Prometheus format. Most
// are read from the parts' own counters when scraped, so the hot paths
// only bump atomics; send latency is observed by an instrumented layer
// (see Instrument).
type Metrics struct {
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
	errs    *prometheus.CounterVec
	refused *prometheus.CounterVec
}

// NewMetrics returns metrics for the connections of conns and the local
// groups of layer, plus the Go runtime's and the process's.
func NewMetrics(conns *consumer.Server, layer channellayer.Layer) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_layer_send_duration_seconds",
			Help:    "Time to hand a message to the channel layer, by operation and result.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op", "result"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_layer_errors_total",
			Help: "Channel layer operations that failed, by operation (sends that reached nobody are not errors).",
		}, []string{"op"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_http_requests_refused_total",
			Help: "HTTP requests refused before their handler, by reason (rate_limited: over HERALD_HTTP_RATE_LIMIT).",
		}, []string{"reason"}),
	}
	m.refused.WithLabelValues("rate_limited") // present at 0 from the start
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.latency, m.errs, m.refused,
		&collector{conns: conns, layer: layer},
	)
	return m
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Refused counts one HTTP request refused for reason, such as
// "rate_limited" (see RateLimit.Refused).
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// Registry returns the registry, for adding metrics of other parts.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) observe(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, channellayer.ErrNoReceivers):
		result = "no_receivers"
	default:
		result = "error"
		m.errs.WithLabelValues(op).Inc()
	}
	m.latency.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// observeGroup is observe for a group send, whose result tells a message
// kept in the group's history for clients that resume, though nobody got
// it now ("kept"), from one that went nowhere.
func (m *Metrics) observeGroup(op string, start time.Time, r channellayer.SendResult, err error) {
	if err == nil && !r.Delivered && r.Kept() {
		m.latency.WithLabelValues(op, "kept").Observe(time.Since(start).Seconds())
		return
	}
	m.observe(op, start, err)
}

// Instrument returns l with its sends timed and its errors counted. Every
// other method is l's own: the Layer interface is the whole contract, so
// the wrapper hides nothing.
func (m *Metrics) Instrument(l channellayer.Layer) channellayer.Layer {
	return &instrumented{Layer: l, m: m}
}

type instrumented struct {
	channellayer.Layer
	m *Metrics
}

func (l *instrumented) GroupSend(ctx context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	start := time.Now()
	r, err := l.Layer.GroupSend(ctx, group, msg)
	l.m.observeGroup("group_send", start, r, err)
	return r, err
}

func (l *instrumented) GroupSendLocal(ctx context.Context, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	start := time.Now()
	r, err := l.Layer.GroupSendLocal(ctx, group, msg)
	l.m.observeGroup("group_send_local", start, r, err)
	return r, err
}

func (l *instrumented) GroupSendOnce(ctx context.Context, source string, seq int64, group string, msg channellayer.Message) (channellayer.SendResult, error) {
	start := time.Now()
	r, err := l.Layer.GroupSendOnce(ctx, source, seq, group, msg)
	if !errors.Is(err, channellayer.ErrUnsupported) { // an answer about the layer, not a send
		l.m.observeGroup("group_send_once", start, r, err)
	}
	return r, err
}

func (l *instrumented) Send(ctx context.Context, channel string, msg channellayer.Message) error {
	start := time.Now()
	err := l.Layer.Send(ctx, channel, msg)
	l.m.observe("send", start, err)
	return err
}

func (l *instrumented) GroupAdd(ctx context.Context, group, channel string) error {
	err := l.Layer.GroupAdd(ctx, group, channel)
	if err != nil && !errors.Is(err, groups.ErrGroupLimit) { // a refusal, not a fault
		l.m.errs.WithLabelValues("group_add").Inc()
	}
	return err
}

// collector reads the parts' counters at scrape time.
type collector struct {
	conns *consumer.Server
	layer channellayer.Layer
}

var (
	descOpen       = prometheus.NewDesc("herald_connections_open", "WebSockets and event streams open now, by route.", []string{"route"}, nil)
	descAccepted   = prometheus.NewDesc("herald_connections_accepted_total", "WebSocket connections accepted, by route.", []string{"route"}, nil)
	descIn         = prometheus.NewDesc("herald_messages_received_total", "Frames received from clients, by route.", []string{"route"}, nil)
	descOut        = prometheus.NewDesc("herald_messages_sent_total", "Frames written to clients, by route.", []string{"route"}, nil)
	descDispatched = prometheus.NewDesc("herald_messages_dispatched_total", "Layer messages handed to a consumer's handler, by route.", []string{"route"}, nil)
	descDropped    = prometheus.NewDesc("herald_messages_dropped_total", "Messages that reached a connection and were not written, by reason.", []string{"reason"}, nil)
	descSlow       = prometheus.NewDesc("herald_slow_consumer_disconnects_total", "Clients closed with 4008 because their outbound queue filled.", nil, nil)
	descChannels   = prometheus.NewDesc("herald_channels", "Channels (connections and other receivers) registered on this instance.", nil, nil)
	descGroups     = prometheus.NewDesc("herald_groups", "Groups with at least one member on this instance.", nil, nil)
	descMembers    = prometheus.NewDesc("herald_group_members", "Group memberships on this instance.", nil, nil)
	descReplays    = prometheus.NewDesc("herald_replays_refused_total", "Replays asked for by resuming clients and not sent, by reason (rate_limited: over HERALD_REPLAY_RATE; too_large: past the replay byte bound, answered with a resync).", []string{"reason"}, nil)
	descLayer      = prometheus.NewDesc("herald_layer_events_total", "Channel layer events, such as reconnects to its backing service, by kind.", []string{"kind"}, nil)

	descHistGroups  = prometheus.NewDesc("herald_history_groups", "Groups whose history this instance holds in memory (in-memory layer).", nil, nil)
	descHistEntries = prometheus.NewDesc("herald_history_entries", "Messages the in-memory histories hold.", nil, nil)
	descHistBytes   = prometheus.NewDesc("herald_history_bytes", "Bytes the in-memory histories are counted to hold: messages plus a fixed cost per message and per group.", nil, nil)
	descHistMax     = prometheus.NewDesc("herald_history_max_bytes", "Bound of herald_history_bytes (HERALD_HISTORY_MAX_BYTES); 0: none.", nil, nil)
	descHistDropped = prometheus.NewDesc("herald_history_dropped_total", "Messages the in-memory histories dropped before their size limit would have, by reason: space (the byte bound was reached, oldest first) or age (older than the group's age, removed by the sweep).", []string{"reason"}, nil)
	historyDescs    = []*prometheus.Desc{descHistGroups, descHistEntries, descHistBytes, descHistMax, descHistDropped}
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descAccepted, descIn, descOut, descDispatched, descDropped, descSlow, descChannels, descGroups, descMembers, descReplays, descLayer} {
		ch <- d
	}
	for _, d := range historyDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.conns.Stats()
	for route, r := range st.Routes {
		ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(r.Open), route)
		ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(r.Accepted), route)
		ch <- prometheus.MustNewConstMetric(descIn, prometheus.CounterValue, float64(r.Received), route)
		ch <- prometheus.MustNewConstMetric(descOut, prometheus.CounterValue, float64(r.Sent), route)
		ch <- prometheus.MustNewConstMetric(descDispatched, prometheus.CounterValue, float64(r.Dispatched), route)
	}
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.NoHandler), "no_handler")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.NotForwarded), "not_forwarded")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.Slow), "slow_consumer")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.Dropped.Closed), "connection_closing")
	ch <- prometheus.MustNewConstMetric(descSlow, prometheus.CounterValue, float64(st.SlowDisconnects))
	ch <- prometheus.MustNewConstMetric(descReplays, prometheus.CounterValue, float64(st.ReplaysRefused.RateLimited), "rate_limited")
	ch <- prometheus.MustNewConstMetric(descReplays, prometheus.CounterValue, float64(st.ReplaysRefused.TooLarge), "too_large")
	ls := c.layer.Stats()
	ch <- prometheus.MustNewConstMetric(descChannels, prometheus.GaugeValue, float64(ls.Local.Channels))
	ch <- prometheus.MustNewConstMetric(descGroups, prometheus.GaugeValue, float64(ls.Local.Groups))
	ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(ls.Local.Members))
	if h := ls.History; h != nil {
		ch <- prometheus.MustNewConstMetric(descHistGroups, prometheus.GaugeValue, float64(h.Groups))
		ch <- prometheus.MustNewConstMetric(descHistEntries, prometheus.GaugeValue, float64(h.Entries))
		ch <- prometheus.MustNewConstMetric(descHistBytes, prometheus.GaugeValue, float64(h.Bytes))
		ch <- prometheus.MustNewConstMetric(descHistMax, prometheus.GaugeValue, float64(h.MaxBytes))
		ch <- prometheus.MustNewConstMetric(descHistDropped, prometheus.CounterValue, float64(h.DroppedForSpace), "space")
		ch <- prometheus.MustNewConstMetric(descHistDropped, prometheus.CounterValue, float64(h.Expired), "age")
	}
	for kind, n := range ls.Events {
		ch <- prometheus.MustNewConstMetric(descLayer, prometheus.CounterValue, float64(n), kind)
	}
}

// CountHTTP adds the plain HTTP connections counted by h to the metrics.
func (m *Metrics) CountHTTP(h *HTTPConns) { m.reg.MustRegister(httpCollector{h}) }

var (
	descHTTPOpen     = prometheus.NewDesc("herald_http_connections_open", "Plain HTTP connections open now (requests, idle keep-alives), not counting those that became WebSockets or event streams.", nil, nil)
	descHTTPAccepted = prometheus.NewDesc("herald_http_connections_accepted_total", "TCP connections accepted and served.", nil, nil)
	descHTTPRefused  = prometheus.NewDesc("herald_http_connections_refused_total", "TCP connections refused at accept, by the limit they met: instance (HERALD_MAX_HTTP_CONNECTIONS) or addr (HERALD_MAX_HTTP_CONNECTIONS_PER_ADDR).", []string{"limit"}, nil)
)

type httpCollector struct{ h *HTTPConns }

func (c httpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHTTPOpen
	ch <- descHTTPAccepted
	ch <- descHTTPRefused
}

func (c httpCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.h.Stats()
	ch <- prometheus.MustNewConstMetric(descHTTPOpen, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(descHTTPAccepted, prometheus.CounterValue, float64(st.Accepted))
	ch <- prometheus.MustNewConstMetric(descHTTPRefused, prometheus.CounterValue, float64(st.RefusedMax), "instance")
	ch <- prometheus.MustNewConstMetric(descHTTPRefused, prometheus.CounterValue, float64(st.RefusedPerAddr), "addr")
}
