package mqtt

import "testing"

func TestDPSUsername(t *testing.T) {
	tests := []struct{ scope, reg, api, client, want string }{
		{"0ne00000001", "gw-001", "2025-07-01-preview", "dpsagent/1.0",
			"0ne00000001/registrations/gw-001/api-version=2025-07-01-preview&ClientVersion=dpsagent%2F1.0"},
		{"0ne00000001", "gw-001", "2025-07-01-preview", "",
			"0ne00000001/registrations/gw-001/api-version=2025-07-01-preview"},
		{"0ne00000001", "a.b:c_d", "2019-03-31", "agent 1.0 (linux; arm64) & more+",
			"0ne00000001/registrations/a.b:c_d/api-version=2019-03-31&ClientVersion=agent%201.0%20%28linux%3B%20arm64%29%20%26%20more%2B"},
	}
	for _, tt := range tests {
		if got := DPSUsername(tt.scope, tt.reg, tt.api, tt.client); got != tt.want {
			t.Errorf("DPSUsername = %q\nwant            %q", got, tt.want)
		}
	}
}

func TestHubUsername(t *testing.T) {
	got := HubUsername("hub1.azure-devices.net", "gw-001", "2025-08-01-preview", "dpsagent/1.0")
	want := "hub1.azure-devices.net/gw-001/?api-version=2025-08-01-preview&DeviceClientType=dpsagent%2F1.0"
	if got != want {
		t.Errorf("HubUsername = %q, want %q", got, want)
	}
	if got := HubUsername("h", "d", "2021-04-12", ""); got != "h/d/?api-version=2021-04-12" {
		t.Errorf("HubUsername without client type = %q", got)
	}
}

func TestEscape(t *testing.T) {
	tests := map[string]string{
		"AZaz09-_.~":       "AZaz09-_.~",
		"a b":              "a%20b",
		"a+b":              "a%2Bb",
		"/?&=#%$":          "%2F%3F%26%3D%23%25%24",
		"é":                "%C3%A9",
		"application/json": "application%2Fjson",
	}
	for in, want := range tests {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}
