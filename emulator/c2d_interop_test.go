package emulator

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

// Microsoft's Node.js SDK receives a cloud-to-device message queued while it
// was offline, then one sent while it is connected, and reads their system
// properties ($.mid, $.to, $.ct, $.cid, $.exp) and application properties from
// the topic as the service encodes them.
func TestC2DInteropNodeSDK(t *testing.T) {
	node := requireNodeSDKs(t)
	const deviceID = "node-c2d"
	key := []byte("node-sdk-c2d-interop-key-0123456")
	e, ep := startTestEmulator(t, nil)
	e.State().AssignDevice(Device{DeviceID: deviceID, RegistrationID: deviceID, Hub: "hub1", SymmetricKeys: [][]byte{key}}, true)

	expiry := time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)
	status, body := call(t, ep, "POST", "/api/devices/"+deviceID+"/c2d",
		`{"body":"queued while offline","message_id":"offline-1","properties":{"$.ct":"text/plain","$.exp":"`+expiry+`","note":"queued"}}`)
	if status != 202 {
		t.Fatalf("send while offline: %d %s, want 202 queued", status, body)
	}

	cmd := exec.Command(node, "c2d.js")
	cmd.Dir = interopDir
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+ep.TLSCAFile,
		"IOTEMU_HUB_HOST="+ep.Hubs["hub1"].Host,
		"IOTEMU_HUB_ADDRESS="+ep.Hubs["hub1"].Address,
		"IOTEMU_DEVICE_ID="+deviceID,
		"IOTEMU_DEVICE_KEY="+sas.EncodeKey(key),
		"IOTEMU_C2D_COUNT=2",
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
	waitC2DDrained(t, ep, deviceID) // the SUBACK brought the queued message, the SDK's PUBACK completed it
	status, body = call(t, ep, "POST", "/api/devices/"+deviceID+"/c2d",
		`{"body":"{\"cmd\":\"reboot\"}","message_id":"msg-42","properties":{"$.ct":"application/json","$.cid":"corr-7","reason":"a b&c=d"}}`)
	if status != 200 {
		t.Fatalf("send: %d %s", status, body)
	}
	<-done
	if runErr != nil {
		t.Fatalf("node c2d.js: %v\n%s", runErr, nodeStderr(runErr))
	}
	type received struct {
		MessageID     string            `json:"message_id"`
		To            string            `json:"to"`
		ContentType   string            `json:"content_type"`
		CorrelationID string            `json:"correlation_id"`
		ExpiryTimeUTC string            `json:"expiry_time_utc"`
		Body          string            `json:"body"`
		Properties    map[string]string `json:"properties"`
	}
	var got []received
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r received
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("SDK output %q: %v", out, err)
		}
		got = append(got, r)
	}
	if len(got) != 2 {
		t.Fatalf("the SDK printed %d messages, want 2: %s", len(got), out)
	}
	to := "/devices/" + deviceID + "/messages/deviceBound"
	if q := got[0]; q.MessageID != "offline-1" || q.To != to || q.ContentType != "text/plain" || q.ExpiryTimeUTC != expiry ||
		q.Body != "queued while offline" || len(q.Properties) != 1 || q.Properties["note"] != "queued" {
		t.Errorf("first, the SDK received %+v; want the message queued while it was offline", q)
	}
	if l := got[1]; l.MessageID != "msg-42" || l.To != to || l.ContentType != "application/json" ||
		l.CorrelationID != "corr-7" || l.Body != `{"cmd":"reboot"}` || len(l.Properties) != 1 || l.Properties["reason"] != "a b&c=d" {
		t.Errorf("then the SDK received %+v", l)
	}
	waitC2DDrained(t, ep, deviceID)
}

// waitC2DDrained waits until the device's cloud-to-device queue is empty.
func waitC2DDrained(t *testing.T, ep *Endpoints, deviceID string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		status, body := call(t, ep, "GET", "/api/devices/"+deviceID+"/c2d", "")
		if status == 200 && strings.TrimSpace(body) == "[]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue of %s never emptied: %d %s", deviceID, status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
