package emulator

import (
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Microsoft's Node.js SDK receives a cloud-to-device message sent through the
// admin API and reads its system properties ($.mid, $.to, $.ct, $.cid) and
// application properties from the topic as the service encodes them.
func TestC2DInteropNodeSDK(t *testing.T) {
	node := requireNodeSDKs(t)
	const deviceID = "node-c2d"
	key := []byte("node-sdk-c2d-interop-key-0123456")
	e, ep := startTestEmulator(t, nil)
	e.State().AssignDevice(Device{DeviceID: deviceID, RegistrationID: deviceID, Hub: "hub1", SymmetricKeys: [][]byte{key}}, true)

	cmd := exec.Command(node, "c2d.js")
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+ep.TLSCAFile,
		"IOTEMU_HUB_HOST="+ep.Hubs["hub1"].Host,
		"IOTEMU_HUB_ADDRESS="+ep.Hubs["hub1"].Address,
		"IOTEMU_DEVICE_ID="+deviceID,
		"IOTEMU_DEVICE_KEY="+sas.EncodeKey(key),
	)
	done := make(chan struct{})
	var out []byte
	var runErr error
	go func() {
		out, runErr = cmd.Output()
		close(done)
	}()
	defer func() {
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			<-done
			t.Error("the Node.js SDK did not finish within 2 minutes")
		}
	}()

	waitSubscribed(t, e, "hub1", deviceID, "devices/"+deviceID+"/messages/devicebound/#")
	status, body := call(t, ep, "POST", "/api/devices/"+deviceID+"/c2d",
		`{"body":"{\"cmd\":\"reboot\"}","message_id":"msg-42","properties":{"$.ct":"application/json","$.cid":"corr-7","reason":"a b&c=d"}}`)
	if status != 200 {
		t.Fatalf("send: %d %s", status, body)
	}
	<-done
	if runErr != nil {
		t.Fatalf("node c2d.js: %v\n%s", runErr, nodeStderr(runErr))
	}
	var got struct {
		MessageID     string            `json:"message_id"`
		To            string            `json:"to"`
		ContentType   string            `json:"content_type"`
		CorrelationID string            `json:"correlation_id"`
		Body          string            `json:"body"`
		Properties    map[string]string `json:"properties"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("SDK output %q: %v", out, err)
	}
	if got.MessageID != "msg-42" || got.To != "/devices/"+deviceID+"/messages/deviceBound" || got.ContentType != "application/json" ||
		got.CorrelationID != "corr-7" || got.Body != `{"cmd":"reboot"}` || len(got.Properties) != 1 || got.Properties["reason"] != "a b&c=d" {
		t.Errorf("the SDK received %+v", got)
	}
}
