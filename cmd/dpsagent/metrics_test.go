package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
)

// The hand-written exposition must be what Prometheus parses, with the
// values the agent's status implies.
func TestMetricsExposition(t *testing.T) {
	m := newMetrics()
	notAfter := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	m.observe(agent.Status{State: agent.StateProvisioning})
	m.observe(agent.Status{State: agent.StateConnected, Connected: true, Certificate: &agent.CertificateStatus{NotAfter: notAfter}})
	m.observe(agent.Status{State: agent.StateConnected, Connected: true, Certificate: &agent.CertificateStatus{NotAfter: notAfter},
		LastRenewal: &agent.RenewalResult{At: time.Now(), Result: "success", Path: "hub"}})
	m.observe(agent.Status{State: agent.StateConnected, Connected: true, Certificate: &agent.CertificateStatus{NotAfter: notAfter},
		LastRenewal: &agent.RenewalResult{At: time.Now().Add(time.Second), Result: "failure"}})

	stop, err := serveMetrics("127.0.0.1:0", m, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var buf bytes.Buffer
	m.write(&buf)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Prometheus cannot parse the exposition: %v\n%s", err, buf.String())
	}
	value := func(name string, labels map[string]string) float64 {
		f, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
		for _, metric := range f.Metric {
			match := true
			for _, lp := range metric.Label {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					match = false
				}
			}
			if match {
				switch {
				case metric.Gauge != nil:
					return metric.Gauge.GetValue()
				case metric.Counter != nil:
					return metric.Counter.GetValue()
				case metric.Histogram != nil:
					return float64(metric.Histogram.GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s with %v", name, labels)
		return 0
	}
	if v := value("dpsagent_connected", nil); v != 1 {
		t.Errorf("connected = %v", v)
	}
	if v := value("dpsagent_state", map[string]string{"state": "connected"}); v != 1 {
		t.Errorf("state connected = %v", v)
	}
	if v := value("dpsagent_certificate_expiry_timestamp_seconds", nil); v != float64(notAfter.Unix()) {
		t.Errorf("expiry = %v", v)
	}
	if v := value("dpsagent_renewals_total", map[string]string{"result": "success", "path": "hub"}); v != 1 {
		t.Errorf("successful hub renewals = %v", v)
	}
	if v := value("dpsagent_renewals_total", map[string]string{"result": "failure"}); v != 1 {
		t.Errorf("failed renewals = %v", v)
	}
	if v := value("dpsagent_provisioning_duration_seconds", nil); v != 1 {
		t.Errorf("provisioning observations = %v", v)
	}
}

func TestMetricsEndpointServesAndConfigRefusesTheNetwork(t *testing.T) {
	stop, err := serveMetrics("127.0.0.1:0", newMetrics(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	for _, addr := range []string{"0.0.0.0:9464", "192.0.2.1:9464", "example.com:9464", "9464"} {
		_, err := loadConfig(configDir(t, minimalConfig+"advanced:\n  metrics_listen: \""+addr+"\"\n"), nil)
		if err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("metrics_listen %q: err = %v", addr, err)
		}
	}
	if _, err := loadConfig(configDir(t, minimalConfig+"advanced:\n  metrics_listen: \"127.0.0.1:9464\"\n"), nil); err != nil {
		t.Errorf("a loopback address was refused: %v", err)
	}
	_ = io.Discard
	_ = http.StatusOK
}
