package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var goldenNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// statusCases are the states an operator meets, each as `status` shows it.
func statusCases() map[string]statusView {
	base := statusView{SchemaVersion: 1, Source: "daemon", IDScope: ptr("0ne00000001"), RegistrationID: "gateway-001", Identity: "x509"}
	cert := &certificateView{Subject: "CN=gateway-001", Issuer: "CN=Issuing CA", Serial: "7f0a16c8",
		NotBefore: goldenNow.Add(-10 * 24 * time.Hour), NotAfter: goldenNow.Add(20 * 24 * time.Hour), KeyAlgorithm: "ecdsa-p384", KeyStorage: "tpm"}
	reg := &registrationView{At: ptr(goldenNow.Add(-10 * 24 * time.Hour)), OperationID: ptr("4.abc"), Status: ptr("assigned"), Substatus: ptr("initialAssignment")}

	fresh := base
	fresh.Source, fresh.State = "state_dir", agent.StateUnprovisioned

	provisioning := base
	provisioning.State = agent.StateProvisioning

	connected := base
	connected.State, connected.Connected, connected.ConnectedSince = agent.StateConnected, true, ptr(goldenNow.Add(-3*time.Hour))
	connected.DeviceID, connected.AssignedHub, connected.Certificate, connected.Registration = ptr("gateway-001"), ptr("hub-a.azure-devices.net"), cert, reg
	connected.NextRenewal, connected.NextRenewalReason = ptr(goldenNow.Add(13*24*time.Hour)), ptr("80% of the certificate's 30-day lifetime, less 1d2h jitter")

	due := connected
	due.State = agent.StateRenewing
	due.NextRenewal, due.NextRenewalReason = ptr(goldenNow.Add(-5*time.Minute)), ptr("renewal was due 5m ago: 80% of the certificate's 30-day lifetime")
	due.LastRenewal = &lastRenewalView{At: goldenNow.Add(-4 * time.Minute), Result: "failure", Path: nil}

	failed := base
	failed.Source, failed.State = "state_dir", agent.StateError
	failed.LastError = &errorView{At: goldenNow.Add(-2 * time.Minute), Message: `register "gateway-001" with DPS: 401: the onboarding credential was not accepted`,
		Hint: ptr("check onboarding.symmetric_key_file holds this device's key (or the group key with group_key: true)"), Code: ptr("401002")}

	clock := connected
	clock.State = agent.StateWaitingForClock
	clock.NextRenewalReason = ptr("the clock is earlier than this build: waiting for time synchronisation")

	sas := base
	sas.Source, sas.State, sas.Identity = "state_dir", agent.StateDisconnected, "sas"
	sas.DeviceID, sas.AssignedHub, sas.Registration = ptr("gateway-001"), ptr("hub-a.azure-devices.net"), reg

	return map[string]statusView{"fresh": fresh, "provisioning": provisioning, "connected": connected,
		"renewal-due": due, "failed": failed, "clock-not-set": clock, "sas": sas}
}

func TestStatusGolden(t *testing.T) {
	for name, v := range statusCases() {
		t.Run(name, func(t *testing.T) {
			var text bytes.Buffer
			renderStatus(&text, v, goldenNow)
			js, err := json.MarshalIndent(v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "status", name+".txt"), text.Bytes())
			golden(t, filepath.Join("testdata", "status", name+".json"), append(js, '\n'))
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// The JSON is a contract: every documented field is present in every state,
// with null rather than absent when unknown, and times in UTC.
func TestStatusJSONSchema(t *testing.T) {
	required := []string{"schema_version", "registration_id", "device_id", "assigned_hub", "state", "connected",
		"certificate", "next_renewal", "last_error", "source", "identity", "connected_since", "registration", "last_renewal", "id_scope"}
	states := map[agent.State]bool{agent.StateUnprovisioned: true, agent.StateProvisioning: true, agent.StateConnected: true,
		agent.StateDisconnected: true, agent.StateRenewing: true, agent.StateWaitingForClock: true, agent.StateError: true}
	for name, v := range statusCases() {
		js, _ := json.Marshal(v)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range required {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: field %q absent (unknown values are null, never absent)", name, k)
			}
		}
		if !states[v.State] {
			t.Errorf("%s: state %q is not one of the documented states", name, v.State)
		}
		if strings.Contains(string(js), "+0") || strings.Contains(string(js), "-0") && strings.Contains(string(js), "T") && !strings.Contains(string(js), "Z\"") {
			t.Errorf("%s: a time is not in UTC: %s", name, js)
		}
		if c, ok := m["certificate"]; ok && string(c) != "null" {
			var cert map[string]any
			_ = json.Unmarshal(c, &cert)
			for _, k := range []string{"serial", "not_before", "not_after", "key_algorithm", "key_storage"} {
				if _, ok := cert[k]; !ok {
					t.Errorf("%s: certificate.%s absent", name, k)
				}
			}
		}
	}
}

// The offline view is built from what the agent committed.
func TestOfflineStatusFromTheStateDirectory(t *testing.T) {
	cfg := &Config{IDScope: "0ne00000001", RegistrationID: "gw", Identity: "x509"}
	cfg.Advanced.StateDir = t.TempDir()
	cfg.Advanced.Renewal.Threshold, cfg.Advanced.Renewal.Jitter = "80%", "5%"
	if v := offlineStatus(cfg, &store.Manifest{}, goldenNow); v.State != agent.StateUnprovisioned || v.Certificate != nil {
		t.Errorf("empty state: %+v", v)
	}
	m := &store.Manifest{Current: &store.Identity{KeyStorage: store.StorageTPM, KeyAlgorithm: store.ECDSAP256, DeviceID: "gw", AssignedHub: "h",
		Serial: "ab", NotBefore: goldenNow, NotAfter: goldenNow.Add(time.Hour), ChainFile: "missing.pem"},
		LastError: &store.Failure{At: goldenNow, Message: "boom", Hint: "fix it"}}
	v := offlineStatus(cfg, m, goldenNow)
	// The daemon is not running: the device is disconnected, and the error
	// is shown beside it.
	if v.State != agent.StateDisconnected || v.Certificate == nil || v.Certificate.Serial != "ab" || v.LastError == nil || *v.LastError.Hint != "fix it" {
		t.Errorf("stored identity with an error: %+v", v)
	}
}

// Text from outside (here a cloud's error message) cannot move the cursor,
// clear the screen or recolour the operator's terminal.
func TestStatusPrintsOutsideTextSafely(t *testing.T) {
	hint := "retry\x1b]0;pwned\x07"
	v := statusView{SchemaVersion: 1, Source: "state_dir", RegistrationID: "gw",
		LastError: &errorView{At: time.Unix(0, 0), Message: "bad\x1b[2J\u009b31m \xff\nline\ttab", Hint: &hint}}
	var b strings.Builder
	renderStatus(&b, v, time.Unix(60, 0))
	out := b.String()
	for _, bad := range []string{"\x1b", "\x9b", "\x07", "\xff", "\t"} {
		if strings.Contains(out, bad) {
			t.Errorf("the status screen holds %q:\n%q", bad, out)
		}
	}
	if !strings.Contains(out, "bad [2J 31m ? line tab") {
		t.Errorf("the message is not kept readable:\n%s", out)
	}
}
