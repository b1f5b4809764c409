package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/cmd/dpsagent/internal/localhttp"
)

// metrics keeps the few figures fleet monitoring needs and writes them in
// Prometheus' text exposition format. It is written by hand rather than with
// the Prometheus client library: five metrics do not justify the megabytes
// the library adds to a binary meant for small gateways (the tests check the
// output with Prometheus' own parser).
type metrics struct {
	mu               sync.Mutex
	connected        bool
	state            agent.State
	notAfter         time.Time
	renewals         map[[2]string]uint64 // {result, path} -> count
	lastRenewal      time.Time
	provisionStarted time.Time
	provisionBuckets []uint64 // cumulative counts per provisionBounds
	provisionSum     float64
	provisionCount   uint64
	lastState        agent.State
}

// provisionBounds are the histogram buckets of provisioning time, seconds.
var provisionBounds = []float64{1, 2, 5, 10, 30, 60, 300, 1800}

func newMetrics() *metrics {
	return &metrics{renewals: map[[2]string]uint64{}, provisionBuckets: make([]uint64, len(provisionBounds))}
}

// observe follows the agent's status changes.
func (m *metrics) observe(s agent.Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if s.State == agent.StateProvisioning && m.lastState != agent.StateProvisioning {
		m.provisionStarted = now
	}
	if s.Connected && !m.provisionStarted.IsZero() {
		d := now.Sub(m.provisionStarted).Seconds()
		for i, b := range provisionBounds {
			if d <= b {
				m.provisionBuckets[i]++
			}
		}
		m.provisionSum += d
		m.provisionCount++
		m.provisionStarted = time.Time{}
	}
	m.lastState, m.state, m.connected = s.State, s.State, s.Connected
	if s.Certificate != nil {
		m.notAfter = s.Certificate.NotAfter
	}
	if r := s.LastRenewal; r != nil && r.At.After(m.lastRenewal) {
		m.lastRenewal = r.At
		path := r.Path
		if path == "" {
			path = "none"
		}
		m.renewals[[2]string{r.Result, path}]++
	}
}

// write renders the exposition format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	metric := func(name, typ, help string) { fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ) }

	metric("dpsagent_build_info", "gauge", "The running dpsagent's version.")
	fmt.Fprintf(&b, "dpsagent_build_info{version=%q} 1\n", version)

	metric("dpsagent_connected", "gauge", "1 while connected to the IoT hub.")
	fmt.Fprintf(&b, "dpsagent_connected %d\n", boolInt(m.connected))

	metric("dpsagent_state", "gauge", "The agent's state: 1 for the current one.")
	for _, st := range []agent.State{agent.StateStarting, agent.StateUnprovisioned, agent.StateProvisioning, agent.StateConnected,
		agent.StateDisconnected, agent.StateRenewing, agent.StateWaitingForClock, agent.StateError} {
		fmt.Fprintf(&b, "dpsagent_state{state=%q} %d\n", st, boolInt(m.state == st))
	}

	if !m.notAfter.IsZero() {
		metric("dpsagent_certificate_expiry_timestamp_seconds", "gauge", "When the certificate in use expires (Unix time).")
		fmt.Fprintf(&b, "dpsagent_certificate_expiry_timestamp_seconds %d\n", m.notAfter.Unix())
	}

	metric("dpsagent_renewals_total", "counter", "Certificate renewals by result and path since start.")
	keys := make([][2]string, 0, len(m.renewals))
	for k := range m.renewals {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		fmt.Fprintf(&b, "dpsagent_renewals_total{result=%q,path=%q} %d\n", k[0], k[1], m.renewals[k])
	}

	metric("dpsagent_provisioning_duration_seconds", "histogram", "Time from the start of provisioning to the first hub connection.")
	for i, bound := range provisionBounds {
		fmt.Fprintf(&b, "dpsagent_provisioning_duration_seconds_bucket{le=%q} %d\n", fmt.Sprint(bound), m.provisionBuckets[i])
	}
	fmt.Fprintf(&b, "dpsagent_provisioning_duration_seconds_bucket{le=\"+Inf\"} %d\n", m.provisionCount)
	fmt.Fprintf(&b, "dpsagent_provisioning_duration_seconds_sum %g\n", m.provisionSum)
	fmt.Fprintf(&b, "dpsagent_provisioning_duration_seconds_count %d\n", m.provisionCount)
	_, _ = io.WriteString(w, b.String())
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// serveMetrics serves /metrics on a loopback address until stop is called.
func serveMetrics(listen string, m *metrics, log *zap.Logger) (func(), error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", listen, err)
	}
	srv := localhttp.New(warnf(log))
	srv.Handle("GET", "/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.write(w)
	})
	log.Info("serving metrics", zap.String("address", "http://"+l.Addr().String()+"/metrics"))
	return serveInBackground(srv, l, log, "metrics endpoint"), nil
}
