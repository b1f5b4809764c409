package emulator

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// interopDir holds Microsoft's Node.js device SDKs, pinned in package-lock.json
// and installed by `make test-tools` (npm ci).
const interopDir = "interop/node"

func requireNodeSDKs(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not installed (apt-get install nodejs npm)"
	default:
		if _, err := os.Stat(filepath.Join(interopDir, "node_modules", "azure-iot-device-mqtt")); err != nil {
			missing = "the Node.js SDKs are not installed: run `make test-tools` (npm ci in emulator/interop/node)"
		}
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	return node
}

// nodeStderr is what a failed node run printed, for the test's message.
func nodeStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// Microsoft's Node.js SDKs provision with a symmetric key, connect to the
// assigned hub, send telemetry and update reported properties; the emulator
// must have seen each of those exactly as the SDKs meant them.
func TestInteropNodeSDK(t *testing.T) {
	node := requireNodeSDKs(t)
	const regID = "node-sdk-device"
	key := sas.EncodeKey([]byte("node-sdk-interop-key-0123456789!"))
	e, ep := startTestEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{{
			RegistrationID: regID,
			Attestation:    Attestation{Type: AttestSymmetricKey, PrimaryKey: key},
		}}
	})
	cmd := exec.Command(node, "interop.js")
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+ep.TLSCAFile,
		"IOTEMU_DPS="+ep.DPS,
		"IOTEMU_ID_SCOPE="+ep.IDScope,
		"IOTEMU_REGISTRATION_ID="+regID,
		"IOTEMU_DEVICE_KEY="+key,
		"IOTEMU_HUB_ADDRESS="+ep.Hubs["hub1"].Address,
	)
	done := make(chan struct{})
	var out []byte
	var runErr error
	go func() {
		out, runErr = cmd.Output()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the Node.js SDK did not finish within 2 minutes")
	}
	if runErr != nil {
		t.Fatalf("node interop.js: %v\n%s", runErr, nodeStderr(runErr))
	}
	var got struct {
		AssignedHub        string `json:"assigned_hub"`
		DeviceID           string `json:"device_id"`
		RegistrationStatus string `json:"registration_status"`
		ReportedVersion    int    `json:"reported_version"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("SDK output %q: %v", out, err)
	}
	if got.AssignedHub != "127.0.0.1" || got.DeviceID != regID || got.RegistrationStatus != "assigned" {
		t.Errorf("the SDK saw registration %+v", got)
	}
	if got.ReportedVersion < 2 {
		t.Errorf("reported $version after the SDK's update = %d, want it bumped", got.ReportedVersion)
	}

	regs := e.State().Registrations()
	if len(regs) != 1 || regs[0].Status != "assigned" {
		t.Errorf("registrations = %+v, want one, assigned", regs)
	}
	var telemetry []TelemetryMessage
	var reported map[string]any
	e.State().WithDevice(regID, func(d *Device) {
		telemetry = append(telemetry, d.Telemetry...)
		reported = d.Twin.Reported
	})
	if len(telemetry) != 1 {
		t.Fatalf("telemetry = %+v, want the one message the SDK sent", telemetry)
	}
	m := telemetry[0]
	if !strings.Contains(m.Body, `"temperature":21.5`) || m.Properties["sdk"] != "node" ||
		m.Properties["$.ct"] != "application/json" || m.Properties["$.ce"] != "utf-8" {
		t.Errorf("telemetry as the emulator stored it: %+v", m)
	}
	if interop, _ := reported["interop"].(map[string]any); interop["sdk"] != "node" || interop["ok"] != true {
		t.Errorf("reported properties = %v", reported)
	}
}
