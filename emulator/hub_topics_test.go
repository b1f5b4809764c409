package emulator

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseHubUsername(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    hubUsername
		wantErr bool
	}{
		// Microsoft's Node.js SDK (azure-iot-device-mqtt 1.16).
		{in: "hub.azure-devices.net/dev-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Linux%3B%20x64)",
			want: hubUsername{Host: "hub.azure-devices.net", DeviceID: "dev-1", APIVersion: "2021-04-12", ClientType: "azure-iot-device/1.18.4 (node v20.20.2; Linux; x64)"}},
		// The same with a Plug and Play model ID before DeviceClientType.
		{in: "h/d/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1&DeviceClientType=x",
			want: hubUsername{Host: "h", DeviceID: "d", APIVersion: "2021-04-12", ModelID: "dtmi:com:example:Thermostat;1", ClientType: "x"}},
		// The credential API preview SDKs.
		{in: "h/d/?api-version=2025-08-01-preview", want: hubUsername{Host: "h", DeviceID: "d", APIVersion: "2025-08-01-preview"}},
		// Bare MQTT examples without a query.
		{in: "h/d", want: hubUsername{Host: "h", DeviceID: "d"}},
		{in: "h/d/", want: hubUsername{Host: "h", DeviceID: "d"}},
		{in: "h/d/m/?api-version=2021-04-12", want: hubUsername{Host: "h", DeviceID: "d", ModuleID: "m", APIVersion: "2021-04-12"}},
		{in: "", wantErr: true},
		{in: "h", wantErr: true},
		{in: "h//?api-version=1", wantErr: true},
		{in: "/d/?api-version=1", wantErr: true},
		{in: "h/d/m/x/?api-version=1", wantErr: true},
		{in: "h/d/?api-version=%zz", wantErr: true},
	} {
		got, err := parseHubUsername(tt.in)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("parseHubUsername(%q) = %+v, %v; want %+v, error %t", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseHubTopic(t *testing.T) {
	for _, tt := range []struct {
		topic  string
		kind   hubRequestKind
		rid    string
		device string
		props  string // hubJSON of the properties
		status int
	}{
		{topic: "$iothub/twin/GET/?$rid=1", kind: hubTwinGet, rid: "1"},
		{topic: "$iothub/twin/GET?$rid=a-b", kind: hubTwinGet, rid: "a-b"},
		{topic: "$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3", kind: hubTwinPatchReported, rid: "7"},
		{topic: "$iothub/methods/res/200/?$rid=1f", kind: hubMethodResponse, rid: "1f", status: 200},
		{topic: "$iothub/methods/res/-1/?$rid=2", kind: hubMethodResponse, rid: "2", status: -1},
		{topic: "$iothub/credentials/POST/issueCertificate/?$rid=abcd", kind: hubIssueCertificate, rid: "abcd"},
		{topic: "$iothub/credentials/POST/issueCertificate/", kind: hubIssueCertificate},
		{topic: "devices/d1/messages/events/", kind: hubTelemetry, device: "d1", props: "{}"},
		{topic: "devices/d1/messages/events", kind: hubTelemetry, device: "d1", props: "{}"},
		{topic: "devices/d1/messages/events/$.ct=application%2Fjson&$.ce=utf-8&k&e=", kind: hubTelemetry, device: "d1",
			props: `{"$.ce":"utf-8","$.ct":"application/json","e":"","k":""}`},
		{topic: "devices/d1/messages/events/a=1&&b=%E2%82%AC", kind: hubTelemetry, device: "d1", props: `{"a":"1","b":"€"}`},
		{topic: "devices/d1/messages/events/a=%zz", kind: hubUnsupported},
		{topic: "devices/d1/messages/events/=v", kind: hubUnsupported},
		{topic: "devices/d1/modules/m1/messages/events/", kind: hubUnsupported},
		{topic: "devices/d1/messages/devicebound/x", kind: hubUnsupported},
		{topic: "devices//messages/events/", kind: hubUnsupported},
		{topic: "$iothub/methods/res/ok/?$rid=1", kind: hubUnsupported},
		{topic: "$iothub/twin/PATCH/properties/desired/?$rid=1", kind: hubUnsupported},
		{topic: "$iothub/unknown", kind: hubUnsupported},
		{topic: "elsewhere", kind: hubUnsupported},
	} {
		req, err := parseHubTopic(tt.topic)
		if tt.kind == hubUnsupported {
			if err == nil {
				t.Errorf("parseHubTopic(%q) accepted: %+v", tt.topic, req)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseHubTopic(%q): %v", tt.topic, err)
			continue
		}
		rid, _, _ := req.query.get("$rid")
		if req.kind != tt.kind || rid != tt.rid || req.deviceID != tt.device || req.status != tt.status {
			t.Errorf("parseHubTopic(%q) = kind %d rid %q device %q status %d", tt.topic, req.kind, rid, req.deviceID, req.status)
		}
		if tt.kind == hubTelemetry && hubJSON(t, req.properties) != tt.props {
			t.Errorf("parseHubTopic(%q) properties %s, want %s", tt.topic, hubJSON(t, req.properties), tt.props)
		}
	}
}

// The answer echoes $rid exactly as sent, escapes included.
func TestHubQueryKeepsRawValues(t *testing.T) {
	q, err := parseHubQuery("$rid=a%2Db&$rid=second&x")
	if err != nil {
		t.Fatal(err)
	}
	if dec, raw, ok := q.get("$rid"); !ok || dec != "a-b" || raw != "a%2Db" {
		t.Errorf("$rid = %q (raw %q), want a-b (raw a%%2Db), first occurrence", dec, raw)
	}
	if _, _, ok := q.get("x"); !ok {
		t.Error("a parameter without '=' is present")
	}
}

func TestHubAPIVersionAtLeast(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want bool
	}{
		{"2025-08-01-preview", true},
		{"2025-08-01", true},
		{"2026-11-02-preview", true},
		{"2025-07-01-preview", false},
		{"2021-04-12", false},
		{"2020-09-30", false},
		{"", false},
		{"latest", false},
		{"2025-8-1", false},
		{"2025-08-01preview", false},
		{"9999-99-99", true},
	} {
		if got := hubAPIVersionAtLeast(tt.v, hubCredentialAPIVersion); got != tt.want {
			t.Errorf("hubAPIVersionAtLeast(%q) = %t, want %t", tt.v, got, tt.want)
		}
	}
}

func TestHubFilterAllowed(t *testing.T) {
	for _, f := range []string{hubFilterTwinResponses, hubFilterDesired, hubFilterMethods, hubFilterCredentials, hubFilterC2DAnyDevice, "devices/d1/messages/devicebound/#"} {
		if !hubFilterAllowed(f, "d1") {
			t.Errorf("%q refused", f)
		}
	}
	for _, f := range []string{"devices/d2/messages/devicebound/#", "devices/D1/messages/devicebound/#", "$iothub/twin/#", "#", "devices/d1/messages/events/"} {
		if hubFilterAllowed(f, "d1") {
			t.Errorf("%q allowed", f)
		}
	}
}

// The topic parser sees every PUBLISH a device sends: whatever it gets, it
// must not panic, and what it accepts must be consistent.
func FuzzHubTopic(f *testing.F) {
	for _, s := range []string{
		"$iothub/twin/GET/?$rid=1",
		"$iothub/twin/PATCH/properties/reported/?$rid=2&$version=1",
		"$iothub/methods/res/200/?$rid=3",
		"$iothub/credentials/POST/issueCertificate/?$rid=0f8fad5b-d9cb-469f-a165-70867728950e",
		"devices/d/messages/events/$.ct=application%2Fjson&$.ce=utf-8&k&v=%E2%82%AC",
		"devices/d/modules/m/messages/events/",
		"devices/d/messages/events/a=%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		req, err := parseHubTopic(topic)
		if err != nil {
			return
		}
		switch req.kind {
		case hubTelemetry:
			if req.deviceID == "" || strings.Contains(req.deviceID, "/") || req.properties == nil {
				t.Fatalf("telemetry %q: device %q, properties %v", topic, req.deviceID, req.properties)
			}
			for k := range req.properties {
				if k == "" {
					t.Fatalf("telemetry %q: a property without a name", topic)
				}
			}
			if !strings.HasPrefix(topic, "devices/"+req.deviceID+"/messages/events") {
				t.Fatalf("telemetry %q attributed to %q", topic, req.deviceID)
			}
		case hubTwinGet, hubTwinPatchReported, hubMethodResponse, hubIssueCertificate:
			if !strings.HasPrefix(topic, "$iothub/") {
				t.Fatalf("%q classified as %d", topic, req.kind)
			}
			// The raw $rid is echoed into an answer's topic: it must not
			// carry a query of its own.
			if _, raw, ok := req.query.get("$rid"); ok && strings.ContainsAny(raw, "&") {
				t.Fatalf("%q: raw $rid %q holds '&'", topic, raw)
			}
		default:
			t.Fatalf("%q accepted with kind %d", topic, req.kind)
		}
	})
}

func FuzzHubUsername(f *testing.F) {
	for _, s := range []string{
		"hub.azure-devices.net/dev-1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4",
		"h/d/?api-version=2025-08-01-preview&model-id=dtmi%3Ax%3By",
		"h/d/m/?api-version=1",
		"h/d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseHubUsername(s)
		if err != nil {
			return
		}
		for _, part := range []string{u.Host, u.DeviceID} {
			if part == "" || strings.ContainsAny(part, "/?") {
				t.Fatalf("parseHubUsername(%q) = %+v: empty or composite host or device", s, u)
			}
		}
		if utf8.ValidString(s) && !utf8.ValidString(u.DeviceID) {
			t.Fatalf("parseHubUsername(%q): device ID %q is not UTF-8", s, u.DeviceID)
		}
		if !strings.HasPrefix(s, u.Host+"/"+u.DeviceID) {
			t.Fatalf("parseHubUsername(%q) = %+v: host and device are not the user name's start", s, u)
		}
	})
}
