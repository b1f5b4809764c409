package hub

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	cert := func() (*tls.Certificate, error) { return nil, nil }
	ok := Options{Host: "myhub.azure-devices.net", DeviceID: "gw-1", Auth: Auth{Certificate: cert}}
	got, err := ok.validate()
	if err != nil {
		t.Fatal(err)
	}
	if got.Port != 8883 || got.Address != "myhub.azure-devices.net:8883" || got.APIVersion != "2025-08-01-preview" ||
		got.KeepAlive != 240*time.Second || got.Auth.TokenLifetime != time.Hour || got.Logger == nil || got.Now == nil || got.Random == nil {
		t.Errorf("defaults not applied: %+v", got)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Options)
		want   string
	}{
		{"no host", func(o *Options) { o.Host = "" }, "Host is empty"},
		{"host with port", func(o *Options) { o.Host = "h:8883" }, "bare host name"},
		{"no device", func(o *Options) { o.DeviceID = "" }, "DeviceID is empty"},
		{"wildcard device", func(o *Options) { o.DeviceID = "a+b" }, "'+'"},
		{"long device", func(o *Options) { o.DeviceID = strings.Repeat("d", 129) }, "128"},
		{"control character", func(o *Options) { o.DeviceID = "a\nb" }, "characters"},
		{"no auth", func(o *Options) { o.Auth = Auth{} }, "no Auth"},
		{"both auths", func(o *Options) { o.Auth.SymmetricKey = []byte("k") }, "both"},
		{"bad port", func(o *Options) { o.Port = 70000 }, "not a TCP port"},
		{"bad address", func(o *Options) { o.Address = "nohostport" }, "HOST:PORT"},
		{"keep-alive too long", func(o *Options) { o.KeepAlive = 30 * time.Minute }, "1177"},
	} {
		o := ok
		tc.mutate(&o)
		if _, err := o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
