package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// startTestEmulator runs an emulator with every listener on a free loopback port.
func startTestEmulator(t *testing.T, mutate func(*Config)) (*Emulator, *Endpoints) {
	t.Helper()
	cfg := Config{
		DPS:   ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  []HubConfig{{Name: "hub1", Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin: ListenerConfig{Listen: "127.0.0.1:0"},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, ep
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// call sends a request to the admin API and returns the status and body.
func call(t *testing.T, ep *Endpoints, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, ep.Admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// compact re-encodes JSON with sorted keys, for exact comparisons.
func compact(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %s", s)
	}
	return mustJSON(t, v)
}

const testKey = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="

func TestAdminEnrollments(t *testing.T) {
	_, ep := startTestEmulator(t, nil)
	enroll := `{"registration_id":"gw-1","attestation":{"type":"symmetric_key","primary_key":"` + testKey + `"}}`
	steps := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/api/enrollments", enroll, 201, `"allocation": "hashed"`},
		{"POST", "/api/enrollments", enroll, 409, "already enrolled"},
		{"POST", "/api/enrollments", `{"registration_id":"gw-2","attestation":{"type":"symmetric_key"}}`, 400, "primary_key is required"},
		{"POST", "/api/enrollments", `{"registration_id":"gw-3","colour":"red"}`, 400, `unknown field \"colour\"`},
		{"POST", "/api/enrollments", `{"group_id":"fleet","attestation":{"type":"symmetric_key","primary_key":"` + testKey + `"},"hubs":["hub1"]}`, 201, `"group_id": "fleet"`},
		{"GET", "/api/enrollments", "", 200, `"registration_id": "gw-1"`},
		{"PATCH", "/api/enrollments/GW-1", `{"enabled":false}`, 200, `"enabled": false`},
		{"PATCH", "/api/enrollments/gw-1", `{"registration_id":"gw-9"}`, 400, "cannot change"},
		{"PATCH", "/api/enrollments/fleet", `{"enabled":false,"allocation":"nope"}`, 400, "use static, evenly or hashed"},
		{"DELETE", "/api/enrollments/gw-1", "", 204, ""},
		{"DELETE", "/api/enrollments/gw-1", "", 404, "no enrollment"},
	}
	for _, s := range steps {
		status, body := call(t, ep, s.method, s.path, s.body)
		if status != s.status || !strings.Contains(body, s.want) {
			t.Errorf("%s %s %s\n  = %d %s\n  want %d containing %q", s.method, s.path, s.body, status, body, s.status, s.want)
		}
	}
	_, body := call(t, ep, "GET", "/api/enrollments", "")
	var list []Enrollment
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 || list[0].GroupID != "fleet" {
		t.Fatalf("enrollments after the sequence: %s", body)
	}
	if !list[0].IsEnabled() {
		t.Error("a refused PATCH changed the enrollment")
	}
}

func TestAdminDevices(t *testing.T) {
	e, ep := startTestEmulator(t, nil)
	if status, body := call(t, ep, "GET", "/api/devices/nope", ""); status != 404 || !strings.Contains(body, "DPS has assigned it") {
		t.Errorf("unknown device: %d %s", status, body)
	}
	e.State().AssignDevice(Device{DeviceID: "dev-1", RegistrationID: "dev-1", Hub: "hub1"}, false)
	if status, body := call(t, ep, "GET", "/api/devices", ""); status != 200 ||
		!strings.Contains(body, `"device_id": "dev-1"`) || !strings.Contains(body, `"certificate": null`) || !strings.Contains(body, `"auth": null`) {
		t.Errorf("device list: %d %s", status, body)
	}
	if status, body := call(t, ep, "GET", "/api/devices/dev-1/telemetry", ""); status != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("telemetry of a new device: %d %s", status, body)
	}
	status, body := call(t, ep, "PATCH", "/api/devices/dev-1/twin/desired", `{"dpsAgent":{"renewRequestId":"r1"}}`)
	if status != 200 || compact(t, body) != `{"desired":{"$version":2,"dpsAgent":{"renewRequestId":"r1"}},"reported":{"$version":1}}` {
		t.Errorf("patch desired: %d %s", status, body)
	}
	if status, body := call(t, ep, "GET", "/api/devices/dev-1/twin", ""); status != 200 || compact(t, body) != `{"desired":{"$version":2,"dpsAgent":{"renewRequestId":"r1"}},"reported":{"$version":1}}` {
		t.Errorf("twin: %d %s", status, body)
	}
	if status, body := call(t, ep, "POST", "/api/devices/dev-1/methods/renewCertificate", `{"payload":{},"timeout_seconds":5}`); status != 404 || !strings.Contains(body, "not connected") {
		t.Errorf("method to a disconnected device: %d %s (IoT Hub answers 404)", status, body)
	}
	if status, body := call(t, ep, "POST", "/api/devices/dev-1/methods/x", `{"timeout_seconds":1}`); status != 400 {
		t.Errorf("method timeout out of range: %d %s", status, body)
	}
	if status, body := call(t, ep, "POST", "/api/devices/dev-1/revoke", ""); status != 200 || !strings.Contains(body, `"revoked": true`) {
		t.Errorf("revoke: %d %s", status, body)
	}
}

func TestAdminFaults(t *testing.T) {
	_, ep := startTestEmulator(t, nil)
	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"endpoint":"dps","action":"throttle"}`, 201, `"retry_after": 5`},
		{`{"endpoint":"hub","device":"d1","operation":"twin","action":"error","probability":0.5}`, 201, `"status": 500`},
		{`{"endpoint":"dps","action":"delay"}`, 400, "needs delay"},
		{`{"endpoint":"dps","action":"delay","delay":"2s"}`, 201, `"delay": "2s"`},
		{`{"endpoint":"cloud","action":"drop"}`, 400, "use one of dps, hub, credential_api"},
		{`{"endpoint":"dps","action":"explode"}`, 400, "action"},
		{`{"endpoint":"dps","action":"drop","count":0}`, 400, "at least 1"},
		// Faults no request could ever match are refused, not kept silently.
		{`{"endpoint":"dps","operation":"regster","action":"drop"}`, 400, `operation \"regster\": endpoint dps has connect, register, poll`},
		{`{"endpoint":"hub","operation":"issue","action":"drop"}`, 400, "endpoint hub has connect, twin, telemetry"},
		{`{"endpoint":"credential_api","operation":"connect","action":"drop"}`, 400, "endpoint credential_api has issue"},
		{`{"endpoint":"hub","action":"wrong_key"}`, 400, `action \"wrong_key\" does not apply to endpoint hub`},
	} {
		status, body := call(t, ep, "POST", "/api/faults", tc.body)
		if status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("POST %s = %d %s, want %d containing %q", tc.body, status, body, tc.status, tc.want)
		}
	}
	_, body := call(t, ep, "GET", "/api/faults", "")
	var faults []Fault
	if err := json.Unmarshal([]byte(body), &faults); err != nil || len(faults) != 3 {
		t.Fatalf("faults: %s", body)
	}
	if status, _ := call(t, ep, "DELETE", "/api/faults", ""); status != 204 {
		t.Fatalf("DELETE faults = %d", status)
	}
	if _, body := call(t, ep, "GET", "/api/faults", ""); strings.TrimSpace(body) != "[]" {
		t.Fatalf("faults after DELETE: %s", body)
	}
}

func TestFaultsCountAndMatch(t *testing.T) {
	fs := NewFaults(nil)
	if _, err := fs.Add(Fault{Endpoint: EndpointDPS, Device: "gw-1", Operation: OpPoll, Action: ActionThrottle, Count: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := fs.Match(EndpointDPS, "gw-2", OpPoll); ok {
		t.Error("a fault for gw-1 matched gw-2")
	}
	if _, ok := fs.Match(EndpointDPS, "GW-1", OpRegister); ok {
		t.Error("a poll fault matched a register")
	}
	for i := 0; i < 2; i++ {
		if f, ok := fs.Match(EndpointDPS, "GW-1", OpPoll); !ok || f.Status != 429 {
			t.Fatalf("match %d = %+v, %v", i, f, ok)
		}
	}
	if _, ok := fs.Match(EndpointDPS, "gw-1", OpPoll); ok {
		t.Error("a fault with count 2 matched a third time")
	}
}

func TestAdminRejectsOversizedBodies(t *testing.T) {
	_, ep := startTestEmulator(t, nil)
	big := `{"registration_id":"` + string(bytes.Repeat([]byte("a"), maxAdminBody)) + `"}`
	if status, _ := call(t, ep, "POST", "/api/enrollments", big); status != 400 {
		t.Fatalf("a body over 1 MiB: status %d, want 400", status)
	}
}

// Every action an endpoint can carry out is accepted for any operation ("*")
// and for each operation where it applies, and refused for the others.
func TestFaultValidateAcceptsWhatEndpointsServe(t *testing.T) {
	for endpoint, ops := range faultOperations {
		for _, op := range append([]string{"*", ""}, ops...) {
			for _, action := range faultEndpointActions[endpoint] {
				f := Fault{Endpoint: endpoint, Operation: op, Action: action, Delay: Duration(time.Second)}
				err := f.Validate()
				if applies := op == "*" || op == "" || FaultApplies(endpoint, op, action); applies != (err == nil) {
					t.Errorf("%s/%s/%s: applies %t, Validate: %v", endpoint, op, action, applies, err)
				}
			}
		}
	}
	for _, f := range []Fault{
		{Endpoint: EndpointDPS, Operation: OpConnect, Action: ActionWrongKey},
		{Endpoint: EndpointHub, Operation: OpConnect, Action: ActionHostile},
		{Endpoint: EndpointHub, Operation: OpTelemetry, Action: ActionMalformedJSON},
	} {
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), "use one of drop, delay, throttle, error") {
			t.Errorf("%s/%s/%s: %v, want it refused with the actions that apply", f.Endpoint, f.Operation, f.Action, err)
		}
	}
	if len(faultOperations) != len(faultEndpoints) || len(faultEndpointActions) != len(faultEndpoints) {
		t.Error("an endpoint lacks its operations or actions")
	}
}

// MatchActions skips, and leaves unconsumed, faults whose action the caller
// cannot carry out.
func TestFaultsMatchActions(t *testing.T) {
	fs := NewFaults(nil)
	for _, f := range []Fault{
		{Endpoint: EndpointDPS, Action: ActionWrongKey},
		{Endpoint: EndpointDPS, Action: ActionThrottle},
	} {
		if _, err := fs.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	atConnect := func(action string) bool { return action != ActionWrongKey }
	if f, ok := fs.MatchActions(EndpointDPS, "dev", OpConnect, atConnect); !ok || f.Action != ActionThrottle {
		t.Fatalf("at CONNECT matched %+v, %v; want the throttle fault", f, ok)
	}
	if _, ok := fs.MatchActions(EndpointDPS, "dev", OpConnect, atConnect); ok {
		t.Fatal("a second match at CONNECT: the throttle fault had count 1")
	}
	if f, ok := fs.Match(EndpointDPS, "dev", OpRegister); !ok || f.Action != ActionWrongKey {
		t.Fatalf("the wrong_key fault was consumed where it did not apply: %+v, %v", f, ok)
	}
	if n := len(fs.List()); n != 0 {
		t.Errorf("%d faults left, want none", n)
	}
}

// The admin API shows times in UTC whatever the clock's location.
func TestAdminTimesAreUTC(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	cfg := Config{
		DPS:   ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  []HubConfig{{Name: "hub1", Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin: ListenerConfig{Listen: "127.0.0.1:0"},
	}
	e, err := New(cfg, t.TempDir(), Options{Logger: zaptest.NewLogger(t), Now: func() time.Time { return time.Now().In(cet) }})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	at := time.Date(2026, 5, 1, 13, 0, 0, 0, cet)
	e.State().AddRegistration(Registration{RegistrationID: "r", OperationID: "op", Status: "assigned", At: at, CompletedAt: &at})
	e.State().AssignDevice(Device{DeviceID: "d", Hub: "hub1", Connected: true, ConnectedSince: &at}, false)
	for _, path := range []string{"/api/registrations", "/api/devices", "/api/devices/d"} {
		_, body := call(t, ep, "GET", path, "")
		if strings.Contains(body, "+01:00") || !strings.Contains(body, `"2026-05-01T12:00:00Z"`) {
			t.Errorf("GET %s: %s, want 2026-05-01T12:00:00Z", path, body)
		}
	}
}

// The admin API's JSON is a contract (issue 3): every documented key is
// present, null when unknown, never absent.
func TestAdminJSONContract(t *testing.T) {
	e, ep := startTestEmulator(t, nil)
	e.State().AddRegistration(Registration{RegistrationID: "r-1", OperationID: "op-1", Status: "assigning", At: time.Now()})
	e.State().AssignDevice(Device{DeviceID: "d-1", Hub: "hub1"}, false)
	e.State().WithDevice("d-1", func(d *Device) {
		d.Telemetry = append(d.Telemetry, TelemetryMessage{At: time.Now().UTC(), Body: "x", Properties: map[string]string{}})
	})
	if status, body := call(t, ep, "POST", "/api/devices/d-1/c2d", `{"body":"x"}`); status != 202 {
		t.Fatalf("queue a C2D message: %d %s", status, body)
	}
	for _, tc := range []struct {
		path string
		keys []string
	}{
		{"/api/registrations", []string{"registration_id", "operation_id", "status", "at", "assigned_hub", "device_id", "issued_serial"}},
		{"/api/devices", []string{"device_id", "hub", "connected", "auth", "connected_since", "certificate", "revoked"}},
		{"/api/devices/d-1/telemetry", []string{"at", "body", "properties"}},
		{"/api/devices/d-1/c2d", []string{"message_id", "status", "position", "deliveries", "enqueued_at", "expires_at", "topic", "body", "properties"}},
	} {
		status, body := call(t, ep, "GET", tc.path, "")
		var list []map[string]any
		if err := json.Unmarshal([]byte(body), &list); status != 200 || err != nil || len(list) != 1 {
			t.Fatalf("GET %s: %d %s", tc.path, status, body)
		}
		for _, k := range tc.keys {
			if _, ok := list[0][k]; !ok {
				t.Errorf("GET %s: no %q in %s", tc.path, k, body)
			}
		}
	}
	_, body := call(t, ep, "GET", "/api/devices/d-1/twin", "")
	var twin map[string]map[string]any
	if err := json.Unmarshal([]byte(body), &twin); err != nil || twin["desired"]["$version"] == nil || twin["reported"]["$version"] == nil {
		t.Errorf("twin %s: want desired and reported, each with $version", body)
	}
}
