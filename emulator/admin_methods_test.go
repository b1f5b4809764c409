package emulator

import (
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// POST /api/devices/{id}/methods/{name} relays the call to the device and
// its answer back, and maps the ways it can fail to IoT Hub's statuses: 404
// for a device that is not connected or not subscribed, 504 for one that does
// not answer in time, 400 for a name or timeout IoT Hub would refuse.
func TestAdminDirectMethods(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "method-dev", "hub1")
	c := env.connectSAS(t, "method-dev", key, hubAPIGA)
	post := func(name, body string) (int, string) {
		t.Helper()
		return call(t, env.ep, "POST", "/api/devices/method-dev/methods/"+name, body)
	}
	if status, body := post("reboot", `{"payload":{}}`); status != 404 || !strings.Contains(body, "not subscribed") {
		t.Errorf("a device not subscribed to methods: %d %s, want 404", status, body)
	}

	// The device answers "reboot" with 201 and its payload, ignores "hang".
	tok := c.Subscribe(hubFilterMethods, 0, func(cl mqtt.Client, m mqtt.Message) {
		name, query, _ := strings.Cut(strings.TrimPrefix(m.Topic(), "$iothub/methods/POST/"), "/?")
		if name == "reboot" {
			cl.Publish("$iothub/methods/res/201/?"+query, 0, false, `{"received":`+string(m.Payload())+`}`)
		}
	})
	hubWaitToken(t, tok, "subscribe to methods")

	status, body := post("reboot", `{"payload":{"delay":5},"timeout_seconds":30}`)
	if status != 200 || compact(t, body) != `{"payload":{"received":{"delay":5}},"status":201}` {
		t.Errorf("answered method: %d %s, want 200 with the device's status and payload", status, body)
	}
	if status, body := post("hang", `{"timeout_seconds":5}`); status != 504 || !strings.Contains(body, "did not answer") {
		t.Errorf("unanswered method: %d %s, want 504", status, body)
	}
	for _, tc := range []struct{ name, body string }{
		{"bad$name", `{}`},
		{"reboot", `{"timeout_seconds":301}`},
		{"reboot", `{"payload":{},"extra":1}`},
	} {
		if status, body := post(tc.name, tc.body); status != 400 {
			t.Errorf("method %q %s: %d %s, want 400", tc.name, tc.body, status, body)
		}
	}
}
