package dps

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

func softKey(t *testing.T) keys.Key {
	t.Helper()
	k, err := (&softkey.Backend{}).CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewValidates(t *testing.T) {
	ca := newTestCA(t, "birth CA")
	key, other := softKey(t), softKey(t)
	good := ca.sign(t, key.Public(), "gw-001", false)
	otherName := ca.sign(t, key.Public(), "gw-002", false)
	base := Options{IDScope: "0ne00000001", RegistrationID: "gw-001", Auth: SymmetricKey([]byte("k"))}
	tests := []struct {
		name   string
		mutate func(*Options)
		want   string // "" for valid
	}{
		{"valid", func(*Options) {}, ""},
		{"valid x509", func(o *Options) { o.Auth = X509(key, [][]byte{good, ca.cert.Raw}) }, ""},
		{"valid group", func(o *Options) { o.Auth = GroupKey([]byte("g")) }, ""},
		{"max length ID", func(o *Options) { o.RegistrationID = strings.Repeat("a", 128) }, ""},
		{"ID with symbols", func(o *Options) { o.RegistrationID = "a.b-c_d:e" }, ""},
		{"no scope", func(o *Options) { o.IDScope = "" }, "ID scope is empty"},
		{"scope with slash", func(o *Options) { o.IDScope = "0ne/0001" }, "ID scope"},
		{"no ID", func(o *Options) { o.RegistrationID = "" }, "registration ID is empty"},
		{"ID too long", func(o *Options) { o.RegistrationID = strings.Repeat("a", 129) }, "up to 128"},
		{"ID starts with a symbol", func(o *Options) { o.RegistrationID = "-gw" }, "not starting or ending"},
		{"ID ends with a symbol", func(o *Options) { o.RegistrationID = "gw." }, "not starting or ending"},
		{"ID with a wildcard", func(o *Options) { o.RegistrationID = "gw+1" }, "registration ID"},
		{"ID with a slash", func(o *Options) { o.RegistrationID = "gw/1" }, "registration ID"},
		{"no credential", func(o *Options) { o.Auth = Auth{} }, "no onboarding credential"},
		{"empty key", func(o *Options) { o.Auth = SymmetricKey(nil) }, "symmetric key is empty"},
		{"x509 without key", func(o *Options) { o.Auth = X509(nil, [][]byte{good}) }, "no private key"},
		{"x509 without chain", func(o *Options) { o.Auth = X509(key, nil) }, "chain is empty"},
		{"x509 garbage", func(o *Options) { o.Auth = X509(key, [][]byte{{1, 2}}) }, "parse the birth certificate"},
		{"x509 wrong CN", func(o *Options) { o.Auth = X509(key, [][]byte{otherName}) }, `CN is "gw-002"`},
		{"x509 other key", func(o *Options) { o.Auth = X509(other, [][]byte{good}) }, "not for the configured key"},
		{"bad endpoint", func(o *Options) { o.Endpoint = "mqtts://dps" }, "advanced.dps_endpoint"},
		{"bad api version", func(o *Options) { o.APIVersion = "2025&x=1" }, "api-version"},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, "negative"},
		{"missing trust bundle", func(o *Options) { o.TrustBundleFile = "/nonexistent/ca.pem" }, "/nonexistent/ca.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mutate(&o)
			_, err := New(o)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := New(Options{IDScope: "0ne00000001", RegistrationID: "gw-001", Auth: SymmetricKey([]byte("k"))})
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if c.addr != "global.azure-devices-provisioning.net:8883" || c.host != "global.azure-devices-provisioning.net" ||
		o.APIVersion != "2025-07-01-preview" || o.TokenLifetime != time.Hour || o.Timeout != DefaultTimeout ||
		o.ConnectTimeout != DefaultConnectTimeout || o.ResponseTimeout != DefaultResponseTimeout || o.Now == nil || o.Logger == nil {
		t.Errorf("defaults not applied: %+v (addr %s)", o, c.addr)
	}
}

// An Auth never prints its secret, whatever the verb.
func TestAuthDoesNotPrintSecrets(t *testing.T) {
	key := softKey(t)
	secret := []byte("super-secret-key-material")
	for _, a := range []Auth{SymmetricKey(secret), GroupKey(secret), X509(key, nil)} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, a)
			if strings.Contains(out, "super-secret") || strings.Contains(out, fmt.Sprint(secret)) {
				t.Errorf("%s printed %q", verb, out)
			}
		}
		out := fmt.Sprintf("%+v", Options{Auth: a})
		if strings.Contains(out, "super-secret") || strings.Contains(out, fmt.Sprint(secret)) {
			t.Errorf("Options printed %q", out)
		}
	}
}

// The caller's key slice can be wiped after making the Auth.
func TestAuthCopiesKey(t *testing.T) {
	k := []byte("abc")
	a := SymmetricKey(k)
	k[0] = 'X'
	if string(a.deviceKey("r")) != "abc" {
		t.Error("Auth shares the caller's slice")
	}
}
