package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// emulator is a running `iotemu serve` and its admin API.
type emulator struct {
	ep   endpoints
	proc *process
	http *http.Client
}

// endpoints is iotemu's ready line (and DATA/endpoints.json).
type endpoints struct {
	IDScope string `json:"id_scope"`
	DPS     string `json:"dps"`
	Hubs    map[string]struct {
		Host    string `json:"host"`
		Address string `json:"address"`
	} `json:"hubs"`
	Admin          string `json:"admin"`
	TLSCAFile      string `json:"tls_ca_file"`
	DeviceRootFile string `json:"device_root_file"`
}

// startEmulator runs iotemu with every listener on a free loopback port;
// extra is appended to its YAML configuration (certificates, enrollments).
// It is stopped by its PID in the test's cleanup.
func startEmulator(t testing.TB, bins binaries, extra string) *emulator {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "iotemu.yaml")
	cfg := `dps: {listen: "127.0.0.1:0"}
hubs: [{name: hub1, host: 127.0.0.1, listen: "127.0.0.1:0"}]
admin: {listen: "127.0.0.1:0"}
` + extra
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	p := startProcess(t, "iotemu", func(line string) {
		if rest, ok := strings.CutPrefix(line, "ready "); ok {
			select {
			case ready <- rest:
			default:
			}
		}
	}, bins.iotemu, "serve", "--data", filepath.Join(dir, "data"), "--config", cfgPath)
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("iotemu output:\n%s", p.tail())
		}
	})
	e := &emulator{proc: p, http: &http.Client{Timeout: 10 * time.Second}}
	select {
	case line := <-ready:
		if err := json.Unmarshal([]byte(line), &e.ep); err != nil {
			t.Fatalf("iotemu's ready line %q: %v", line, err)
		}
	case <-p.done:
		t.Fatalf("iotemu exited before it was ready (%v):\n%s", p.waitErr, p.tail())
	case <-time.After(30 * time.Second):
		t.Fatalf("iotemu was not ready within 30s:\n%s", p.tail())
	}
	if _, ok := e.ep.Hubs["hub1"]; !ok || e.ep.Admin == "" || e.ep.DPS == "" || e.ep.TLSCAFile == "" {
		t.Fatalf("iotemu's ready line lacks endpoints: %+v", e.ep)
	}
	return e
}

func (e *emulator) hubPort(t testing.TB) int {
	t.Helper()
	_, port, err := net.SplitHostPort(e.ep.Hubs["hub1"].Address)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// call makes an admin API request and decodes the answer into out (if not
// nil); it returns the HTTP status.
func (e *emulator) call(t testing.TB, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.ep.Admin+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		if e.proc.exited() {
			t.Fatalf("admin API %s %s: iotemu has exited (%v)", method, path, e.proc.waitErr)
		}
		t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("admin API %s %s: %v", method, path, err)
	}
	if out != nil && resp.StatusCode < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("admin API %s %s: %v\n%s", method, path, err, data)
		}
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		t.Fatalf("admin API %s %s: %s\n%s", method, path, resp.Status, data)
	}
	return resp.StatusCode
}

// emuDevice is a device as GET /api/devices/{id} shows it.
type emuDevice struct {
	DeviceID       string     `json:"device_id"`
	RegistrationID string     `json:"registration_id"`
	Hub            string     `json:"hub"`
	Connected      bool       `json:"connected"`
	Auth           *string    `json:"auth"`
	ConnectedSince *time.Time `json:"connected_since"`
	Certificate    *struct {
		Serial   string    `json:"serial"`
		NotAfter time.Time `json:"not_after"`
	} `json:"certificate"`
	Revoked bool `json:"revoked"`
}

func (d emuDevice) serial() string {
	if d.Certificate == nil {
		return ""
	}
	return d.Certificate.Serial
}

// device returns the device, or false while DPS has not assigned it.
func (e *emulator) device(t testing.TB, id string) (emuDevice, bool) {
	t.Helper()
	var d emuDevice
	return d, e.call(t, http.MethodGet, "/api/devices/"+id, nil, &d) == http.StatusOK
}

// emuRegistration is one registration attempt, as GET /api/registrations lists it.
type emuRegistration struct {
	RegistrationID string  `json:"registration_id"`
	OperationID    string  `json:"operation_id"`
	Status         string  `json:"status"`
	DeviceID       *string `json:"device_id"`
	IssuedSerial   *string `json:"issued_serial"`
	ErrorCode      *int    `json:"error_code"`
}

func (r emuRegistration) issuedSerial() string {
	if r.IssuedSerial == nil {
		return ""
	}
	return *r.IssuedSerial
}

// registrations lists the registration attempts of one registration ID.
func (e *emulator) registrations(t testing.TB, regID string) []emuRegistration {
	t.Helper()
	var all []emuRegistration
	e.call(t, http.MethodGet, "/api/registrations", nil, &all)
	var mine []emuRegistration
	for _, r := range all {
		if strings.EqualFold(r.RegistrationID, regID) {
			mine = append(mine, r)
		}
	}
	return mine
}

// twin returns the device twin's reported properties.
func (e *emulator) reported(t testing.TB, id string) map[string]any {
	t.Helper()
	var twin struct {
		Reported map[string]any `json:"reported"`
	}
	if e.call(t, http.MethodGet, "/api/devices/"+id+"/twin", nil, &twin) != http.StatusOK {
		t.Fatalf("no twin for device %q", id)
	}
	return twin.Reported
}

// emuFault is an injected fault as the admin API shows it.
type emuFault struct {
	ID     int    `json:"id"`
	Action string `json:"action"`
	Count  *int   `json:"count"`
	Hits   int    `json:"hits"`
}

func (e *emulator) addFault(t testing.TB, f map[string]any) emuFault {
	t.Helper()
	var added emuFault
	if code := e.call(t, http.MethodPost, "/api/faults", f, &added); code != http.StatusCreated {
		t.Fatalf("POST /api/faults %v: status %d", f, code)
	}
	return added
}

func (e *emulator) faults(t testing.TB) []emuFault {
	t.Helper()
	var fs []emuFault
	e.call(t, http.MethodGet, "/api/faults", nil, &fs)
	return fs
}

func (e *emulator) revoke(t testing.TB, id string) {
	t.Helper()
	if code := e.call(t, http.MethodPost, "/api/devices/"+id+"/revoke", nil, nil); code != http.StatusOK {
		t.Fatalf("revoke %q: status %d", id, code)
	}
}

func (e *emulator) patchEnrollment(t testing.TB, id string, patch map[string]any) {
	t.Helper()
	if code := e.call(t, http.MethodPatch, "/api/enrollments/"+id, patch, nil); code != http.StatusOK {
		t.Fatalf("PATCH enrollment %q: status %d", id, code)
	}
}

// newSymmetricKey is a random enrollment key, base64 as DPS shows it.
func newSymmetricKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// symmetricEnrollment is an iotemu enrollments entry (individual, or a group
// when group is true) attested by key.
func symmetricEnrollment(id, key string, group bool) string {
	field := "registration_id"
	if group {
		field = "group_id"
	}
	return fmt.Sprintf("  - %s: %s\n    attestation: {type: symmetric_key, primary_key: %q}\n", field, id, key)
}

// waitConnected waits until the emulator shows the device connected with a
// certificate that accept (if not nil) takes.
func (e *emulator) waitConnected(t testing.TB, id string, agent *process, what string, limit time.Duration, accept func(emuDevice) bool) emuDevice {
	t.Helper()
	return eventually(t, limit, what, agent, func() (emuDevice, bool) {
		d, ok := e.device(t, id)
		return d, ok && d.Connected && d.Certificate != nil && (accept == nil || accept(d))
	})
}
