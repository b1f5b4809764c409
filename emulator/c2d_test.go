package emulator

import (
	"encoding/json"
	"maps"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// A cloud-to-device message posted to the admin API reaches the device on
// devices/{id}/messages/devicebound/{bag}, with the system properties encoded
// as IoT Hub sends them, at the QoS the device subscribed with; the admin API
// answers 200 once the device has it, and 202 with the message's place in the
// queue while the device cannot take it.
func TestC2D(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "c2d-dev", "hub1")
	const path = "/api/devices/c2d-dev/c2d"
	post := func(body string) (int, string) {
		t.Helper()
		return call(t, env.ep, "POST", path, body)
	}
	queued := func(body, reason string, position int) {
		t.Helper()
		status, answer := post(body)
		var q C2DQueued
		if err := json.Unmarshal([]byte(answer), &q); status != 202 || err != nil || q.Status != C2DStatusQueued ||
			q.Position != position || !strings.Contains(q.Reason, reason) {
			t.Errorf("POST %s: %d %s, want 202 queued at %d because %q", body, status, answer, position, reason)
		}
	}

	queued(`{"body":"early","message_id":"early-1"}`, "not connected", 1)
	c := env.connectSAS(t, "c2d-dev", key, hubAPIGA)
	c.mustSubscribe(t, hubFilterTwinResponses)
	queued(`{"body":"still early","message_id":"early-2"}`, "not subscribed", 2)
	c.mustSubscribe(t, "devices/c2d-dev/messages/devicebound/#")
	for _, id := range []string{"early-1", "early-2"} {
		if m := c.next(t); !strings.Contains(m.Topic(), "%24.mid="+id+"&") {
			t.Errorf("after subscribing, received %s; want the queued %s first", m.Topic(), id)
		}
	}

	status, body := post(`{"body":"{\"cmd\":\"reboot\"}","message_id":"m-1",` +
		`"properties":{"$.ct":"application/json","$.ce":"utf-8","reason":"a b&c=d+e/f%"}}`)
	if status != 200 {
		t.Fatalf("send: %d %s", status, body)
	}
	var got C2DDelivery
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != C2DStatusDelivered {
		t.Errorf("delivery status %q, want %q", got.Status, C2DStatusDelivered)
	}
	wantTopic := "devices/c2d-dev/messages/devicebound/%24.mid=m-1&%24.to=%2Fdevices%2Fc2d-dev%2Fmessages%2FdeviceBound" +
		"&%24.ce=utf-8&%24.ct=application%2Fjson&reason=a%20b%26c%3Dd%2Be%2Ff%25"
	if got.MessageID != "m-1" || got.QoS != 1 || got.Topic != wantTopic {
		t.Errorf("delivery %+v, want message m-1 at QoS 1 on %s", got, wantTopic)
	}
	m := c.expect(t, wantTopic)
	if string(m.Payload()) != `{"cmd":"reboot"}` || m.Qos() != 1 {
		t.Errorf("device received %s at QoS %d", m.Payload(), m.Qos())
	}
	// An independent decoder (a query string: the bag has no '+' left to
	// mistake for a space) reads back what was sent.
	bag, err := url.ParseQuery(strings.TrimPrefix(m.Topic(), "devices/c2d-dev/messages/devicebound/"))
	if err != nil {
		t.Fatal(err)
	}
	if bag.Get("$.mid") != "m-1" || bag.Get("$.to") != "/devices/c2d-dev/messages/deviceBound" ||
		bag.Get("$.ct") != "application/json" || bag.Get("reason") != "a b&c=d+e/f%" {
		t.Errorf("property bag decodes to %v", bag)
	}

	// Without message_id the service SDKs send a GUID.
	status, body = post(`{"body":""}`)
	if err := json.Unmarshal([]byte(body), &got); status != 200 || err != nil || !hubGUIDPattern.MatchString(got.MessageID) {
		t.Errorf("send without message_id: %d %s, want a GUID", status, body)
	}
	c.expect(t, got.Topic)

	for _, bad := range []struct{ body, want string }{
		{`{"body":"x","properties":{"$.mid":"mine"}}`, "system properties"},
		{`{"body":"x","properties":{"$.to":"/devices/other"}}`, "system properties"},
		{`{"body":"x","properties":{"caf\u00e9":"1"}}`, "printable ASCII"},
		{`{"body":"x","properties":{"k":"line\nbreak"}}`, "printable ASCII"},
		{`{"body":"x","message_id":"has space"}`, "message_id"},
		{`{"body":"` + strings.Repeat("A", c2dMaxBody+1) + `"}`, "at most 65536"},
		{`{"body":"x","ttl":60}`, `unknown field \"ttl\"`},
		{`{"body":"x","properties":{"$.exp":"tomorrow"}}`, "RFC 3339"},
	} {
		if status, body := post(bad.body); status != 400 || !strings.Contains(body, bad.want) {
			t.Errorf("POST %.80s: %d %s, want 400 mentioning %q", bad.body, status, body, bad.want)
		}
	}
	if status, body := call(t, env.ep, "POST", "/api/devices/nobody/c2d", `{"body":"x"}`); status != 404 {
		t.Errorf("to an unknown device: %d %s", status, body)
	}

	c.Unsubscribe("devices/c2d-dev/messages/devicebound/#").Wait()
	queued(`{"body":"late"}`, "not subscribed", 1)
}

// azure-sdk-for-c subscribes to devices/+/messages/devicebound/#; a QoS 0
// subscription gets QoS 0 messages.
func TestC2DWildcardSubscriptionAtQoS0(t *testing.T) {
	env := newHubEnv(t, nil)
	key := env.addSASDevice(t, "c2d-embedded", "hub1")
	c := env.connectSAS(t, "c2d-embedded", key, hubAPIGA)
	tok := c.Subscribe(hubFilterC2DAnyDevice, 0, nil)
	hubWaitToken(t, tok, "subscribe")
	status, body := call(t, env.ep, "POST", "/api/devices/c2d-embedded/c2d", `{"body":"ping","message_id":"q0"}`)
	var got C2DDelivery
	if err := json.Unmarshal([]byte(body), &got); status != 200 || err != nil || got.QoS != 0 {
		t.Fatalf("send: %d %s, want delivered at QoS 0", status, body)
	}
	if m := c.expect(t, got.Topic); string(m.Payload()) != "ping" || m.Qos() != 0 {
		t.Errorf("device received %s at QoS %d", m.Payload(), m.Qos())
	}
}

func TestC2DEscape(t *testing.T) {
	for in, want := range map[string]string{
		"":               "",
		"AZaz09-._~":     "AZaz09-._~",
		"$.mid":          "%24.mid",
		"/devices/d":     "%2Fdevices%2Fd",
		"a b+c#d&e=f%":   "a%20b%2Bc%23d%26e%3Df%25",
		"\u00e9\x00\xff": "%C3%A9%00%FF",
	} {
		if got := c2dEscape(in); got != want {
			t.Errorf("c2dEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

// Whatever message the admin API accepts becomes a topic name MQTT allows
// (UTF-8, no wildcard, no NUL) whose property bag decodes, with the hub's own
// telemetry bag parser, to exactly the properties sent plus $.mid and $.to.
func FuzzC2DTopic(f *testing.F) {
	f.Add("m-1", "$.ct", "application/json", "k", "v")
	f.Add("", "reason", "a b&c=d+e/f%", "#", "+")
	f.Add("id=1&x", "$.cid", "", "%24.mid", "1")
	f.Fuzz(func(t *testing.T, id, k1, v1, k2, v2 string) {
		m := C2DMessage{MessageID: id, Properties: map[string]string{k1: v1, k2: v2}}
		if m.Validate() != nil {
			return
		}
		if m.MessageID == "" {
			m.MessageID = "generated"
		}
		topic := c2dTopic("dev-1", m)
		if !utf8.ValidString(topic) || strings.ContainsAny(topic, "+#\x00") {
			t.Fatalf("topic %q is not a valid MQTT topic name", topic)
		}
		bag, ok := strings.CutPrefix(topic, "devices/dev-1/messages/devicebound/")
		if !ok || strings.Contains(bag, "/") {
			t.Fatalf("topic %q: the bag must be one topic level after devicebound/", topic)
		}
		got, err := hubParsePropertyBag(bag)
		if err != nil {
			t.Fatalf("bag %q: %v", bag, err)
		}
		want := maps.Clone(m.Properties)
		want["$.mid"], want["$.to"] = m.MessageID, "/devices/dev-1/messages/deviceBound"
		if !maps.Equal(got, want) {
			t.Fatalf("bag %q decodes to %v, want %v", bag, got, want)
		}
	})
}
