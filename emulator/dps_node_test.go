package emulator

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// dpsNodeScript registers through Microsoft's Node.js provisioning SDK over
// MQTT and prints the registration result as JSON, or the SDK's error.
const dpsNodeScript = `
'use strict';
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const env = process.env;
const security = new SymmetricKeySecurityClient(env.IOTEMU_REGISTRATION_ID, env.IOTEMU_DEVICE_KEY);
const client = ProvisioningDeviceClient.create(env.IOTEMU_DPS, env.IOTEMU_ID_SCOPE, new Mqtt(), security);
client.setProvisioningPayload({ site: 'lab-3' });
client.register().then(
  (r) => { process.stdout.write(JSON.stringify(r) + '\n'); process.exit(0); },
  (err) => { process.stdout.write(JSON.stringify({ error: String(err && err.message || err) }) + '\n'); process.exit(0); });
`

// Microsoft's Node.js SDK provisions through the emulator: individual and
// group symmetric keys, with a custom payload, over its own MQTT stack, which
// insists on the response topic, the statuses and retry-after as the service
// sends them. A disabled enrollment must surface as the SDK's failure.
func TestDPSNodeSDK(t *testing.T) {
	node := requireNodeSDKs(t)
	individualKey, groupKey := dpsKey("node-individual"), dpsKey("node-group")
	disabled := dpsSymmetricEnrollment("node-disabled", individualKey)
	disabled.Enabled = ptr(false)
	_, ep := startDPSEmulator(t, func(c *Config) {
		c.Enrollments = []Enrollment{dpsSymmetricEnrollment("node-individual", individualKey),
			dpsGroupEnrollment("node-fleet", groupKey), disabled}
	})
	for _, tc := range []struct {
		name, regID, key string
		wantError        bool
	}{
		{"individual", "node-individual", individualKey, false},
		{"group", "node-member-1", dpsDerivedKey(t, groupKey, "node-member-1"), false},
		{"wrong key", "node-individual", groupKey, true},
		{"disabled", "node-disabled", individualKey, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := runDPSNode(t, node, ep, tc.regID, tc.key)
			var got struct {
				Error       string          `json:"error"`
				AssignedHub string          `json:"assignedHub"`
				DeviceID    string          `json:"deviceId"`
				Status      string          `json:"status"`
				Substatus   string          `json:"substatus"`
				Payload     json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("SDK output %q: %v", out, err)
			}
			if tc.wantError {
				if got.Error == "" {
					t.Errorf("the SDK registered: %s", out)
				}
				return
			}
			if got.Error != "" || got.Status != "assigned" || got.DeviceID != tc.regID || got.AssignedHub == "" ||
				got.Substatus != "initialAssignment" || string(got.Payload) != `{"site":"lab-3"}` {
				t.Errorf("the SDK saw %s", out)
			}
		})
	}
}

func dpsDerivedKey(t *testing.T, groupKey, regID string) string {
	t.Helper()
	k, err := sas.DecodeKey(groupKey)
	if err != nil {
		t.Fatal(err)
	}
	return sas.EncodeKey(sas.DeriveDeviceKey(k, regID))
}

func runDPSNode(t *testing.T, node string, ep *Endpoints, regID, key string) []byte {
	t.Helper()
	dir, err := filepath.Abs(interopDir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "-e", dpsNodeScript)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+ep.TLSCAFile,
		"IOTEMU_DPS="+ep.DPS,
		"IOTEMU_ID_SCOPE="+ep.IDScope,
		"IOTEMU_REGISTRATION_ID="+regID,
		"IOTEMU_DEVICE_KEY="+key,
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
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the Node.js SDK did not finish within a minute")
	}
	if runErr != nil {
		t.Fatalf("node: %v", runErr)
	}
	return out
}
