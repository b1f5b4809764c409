package hub

import (
	"maps"
	"strings"
	"testing"
)

func TestParseResponseTopic(t *testing.T) {
	for _, tc := range []struct {
		name, topic, prefix string
		status              int
		rid                 string
		version             int64
		wantErr             string
	}{
		{"twin 200", "$iothub/twin/res/200/?$rid=abc-1", prefixTwinResponse, 200, "abc-1", -1, ""},
		{"reported 204 with version", "$iothub/twin/res/204/?$rid=r1&$version=7", prefixTwinResponse, 204, "r1", 7, ""},
		{"parameters in any order", "$iothub/twin/res/204/?$version=9&$rid=r1", prefixTwinResponse, 204, "r1", 9, ""},
		{"credentials with extra parameters", "$iothub/credentials/res/202/?$rid=0f3c&$version=1&x=y", prefixCredentialsRes, 202, "0f3c", 1, ""},
		{"bare question mark", "$iothub/credentials/res/200?$rid=r", prefixCredentialsRes, 200, "r", -1, ""},
		{"escaped rid", "$iothub/twin/res/200/?%24rid=a%2Db", prefixTwinResponse, 200, "a-b", -1, ""},
		{"no rid", "$iothub/twin/res/200/?$version=1", prefixTwinResponse, 0, "", 0, "no $rid"},
		{"empty rid", "$iothub/twin/res/200/?$rid=", prefixTwinResponse, 0, "", 0, "no $rid"},
		{"rid twice", "$iothub/twin/res/200/?$rid=a&$rid=b", prefixTwinResponse, 0, "", 0, "appears 2 times"},
		{"status not a number", "$iothub/twin/res/2x0/?$rid=a", prefixTwinResponse, 0, "", 0, "three-digit"},
		{"status too long", "$iothub/twin/res/2000/?$rid=a", prefixTwinResponse, 0, "", 0, "three-digit"},
		{"status below 100", "$iothub/twin/res/099/?$rid=a", prefixTwinResponse, 0, "", 0, "out of range"},
		{"extra level", "$iothub/twin/res/200/x/?$rid=a", prefixTwinResponse, 0, "", 0, "after the status"},
		{"wrong prefix", "$iothub/methods/POST/x/?$rid=a", prefixTwinResponse, 0, "", 0, "does not start"},
		{"bad escape", "$iothub/twin/res/200/?$rid=%zz", prefixTwinResponse, 0, "", 0, "invalid URL escape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseResponseTopic(tc.topic, tc.prefix)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.status != tc.status || got.rid != tc.rid {
				t.Fatalf("got status %d rid %q, want %d %q", got.status, got.rid, tc.status, tc.rid)
			}
			v, ok, err := got.topic.Version()
			if err != nil || (tc.version < 0) == ok || (ok && v != tc.version) {
				t.Fatalf("version = %d, %v, %v; want %d", v, ok, err, tc.version)
			}
		})
	}
}

func TestParseMethodTopic(t *testing.T) {
	for _, tc := range []struct {
		topic, name, rid, wantErr string
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", "reboot", "1", ""},
		{"$iothub/methods/POST/getStatus/?$rid=ab%2D1&x=2", "getStatus", "ab%2D1", ""}, // the rid is echoed as sent
		{"$iothub/methods/POST/reboot?$rid=7", "reboot", "7", ""},
		{"$iothub/methods/POST//?$rid=1", "", "", "no single method name"},
		{"$iothub/methods/POST/a/b/?$rid=1", "", "", "no single method name"},
		{"$iothub/methods/POST/reboot/", "", "", "no usable $rid"},
		{"$iothub/methods/POST/reboot/?$rid=a/b", "", "", "no usable $rid"},
		{"$iothub/methods/res/200/?$rid=1", "", "", "want $iothub/methods/POST/"},
	} {
		got, err := parseMethodTopic(tc.topic)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseMethodTopic(%q) error = %v, want %q", tc.topic, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.name != tc.name || got.rawRID != tc.rid {
			t.Errorf("parseMethodTopic(%q) = %+v, %v; want %q %q", tc.topic, got, err, tc.name, tc.rid)
		}
	}
}

func TestParseDesiredTopic(t *testing.T) {
	for _, tc := range []struct {
		topic   string
		version int
		ok      bool
		wantErr bool
	}{
		{"$iothub/twin/PATCH/properties/desired/?$version=12", 12, true, false},
		{"$iothub/twin/PATCH/properties/desired/", 0, false, false},
		{"$iothub/twin/PATCH/properties/desired?$version=3", 3, true, false},
		{"$iothub/twin/PATCH/properties/desired/?$version=-1", 0, false, true},
		{"$iothub/twin/PATCH/properties/desired/?$version=99999999999", 0, false, true},
		{"$iothub/twin/PATCH/properties/desired/x/?$version=1", 0, false, true},
	} {
		v, ok, err := parseDesiredTopic(tc.topic)
		if (err != nil) != tc.wantErr || v != tc.version || ok != tc.ok {
			t.Errorf("parseDesiredTopic(%q) = %d, %v, %v; want %d, %v, error %v", tc.topic, v, ok, err, tc.version, tc.ok, tc.wantErr)
		}
	}
}

func TestParseC2DTopic(t *testing.T) {
	for _, tc := range []struct {
		topic   string
		want    map[string]string
		wantErr bool
	}{
		{"devices/dev1/messages/devicebound/%24.mid=42&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&color=dark+blue", map[string]string{
			"$.mid": "42", "$.to": "/devices/dev1/messages/devicebound", "color": "dark+blue",
		}, false},
		{"devices/dev1/messages/devicebound/a=1%202&flag", map[string]string{"a": "1 2", "flag": ""}, false},
		{"devices/dev1/messages/devicebound/", map[string]string{}, false},
		{"devices/dev1/messages/devicebound", map[string]string{}, false},
		{"devices/dev1/messages/devicebound/=x", nil, true},
		{"devices/dev1/messages/devicebound/a=%zz", nil, true},
		{"devices/dev2/messages/devicebound/a=1", nil, true},
	} {
		got, err := parseC2DTopic(tc.topic, "dev1")
		if (err != nil) != tc.wantErr || (!tc.wantErr && !maps.Equal(got, tc.want)) {
			t.Errorf("parseC2DTopic(%q) = %v, %v; want %v (error %v)", tc.topic, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestTelemetryTopic(t *testing.T) {
	for _, tc := range []struct {
		props map[string]string
		want  string
	}{
		{nil, "devices/dev1/messages/events/"},
		{map[string]string{"$.ct": "application/json", "$.ce": "utf-8"}, "devices/dev1/messages/events/$.ce=utf-8&$.ct=application%2Fjson"},
		{map[string]string{"alert level": "very high", "a&b": "x=y", "plus": "1+1"}, "devices/dev1/messages/events/a%26b=x%3Dy&alert%20level=very%20high&plus=1%2B1"},
	} {
		got, err := telemetryTopic("dev1", tc.props)
		if err != nil || got != tc.want {
			t.Errorf("telemetryTopic(%v) = %q, %v; want %q", tc.props, got, err, tc.want)
		}
	}
	if _, err := telemetryTopic("dev1", map[string]string{"": "x"}); err == nil {
		t.Error("a property with an empty name was accepted")
	}
}

// What the session writes into a property bag, the hub's reading (and ours)
// gives back unchanged.
func TestPropertyBagRoundTrip(t *testing.T) {
	props := map[string]string{"$.ct": "application/json; charset=utf-8", "$.ce": "utf-8", "k y": "v&=%+/?#", "ünï": "cödé", "empty": ""}
	bag, err := encodePropertyBag(props)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parsePropertyBag(bag)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, props) {
		t.Fatalf("round trip through %q gave %v, want %v", bag, got, props)
	}
}

func TestUsername(t *testing.T) {
	o := Options{Host: "myhub.azure-devices.net", DeviceID: "gw-1", APIVersion: DefaultAPIVersion, UserAgent: "dpsagent/1.2 (linux; arm64)"}
	want := "myhub.azure-devices.net/gw-1/?api-version=2025-08-01-preview&DeviceClientType=dpsagent%2F1.2%20%28linux%3B%20arm64%29"
	if got := o.username(); got != want {
		t.Errorf("username = %q\nwant       %q", got, want)
	}
	o.ModelID = "dtmi:com:example:Gateway;1"
	if got := o.username(); got != want+"&model-id=dtmi%3Acom%3Aexample%3AGateway%3B1" {
		t.Errorf("username with model ID = %q", got)
	}
}

func TestNewRID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		rid := newRID()
		if len(rid) < 4 || len(rid) > 36 || strings.HasPrefix(rid, "-") || strings.HasSuffix(rid, "-") ||
			strings.ContainsFunc(rid, func(r rune) bool { return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z') }) {
			t.Fatalf("request ID %q breaks the hub's rules (4-36 of [A-Za-z0-9-], not starting or ending with '-')", rid)
		}
		if seen[rid] {
			t.Fatalf("request ID %q repeated", rid)
		}
		seen[rid] = true
	}
}
