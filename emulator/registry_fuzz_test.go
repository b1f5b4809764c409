package emulator

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A device registry file is refused with an error or read into a device the
// hub can use (an ID, a hub, twins at $version 1 or more) whose file name is
// a plain name, and which writes back to a file that reads the same: what
// the store saves after loading never changes what it loaded.
func FuzzRegistryEntry(f *testing.F) {
	ca := newDPSTestCA(f, "fuzz CA", nil)
	for _, d := range []*Device{
		{DeviceID: "gw-1", RegistrationID: "gw-1", Hub: "hub1", EnrollmentKey: "registration:gw-1", InitialHub: "hub2",
			SymmetricKeys: [][]byte{[]byte("0123456789abcdef0123456789abcdef")}, Issued: true,
			Certificate: &CertificateInfo{Serial: "01", NotBefore: time.Unix(0, 0).UTC(), NotAfter: time.Unix(1e9, 0).UTC(), SHA256: "AA"},
			Twin: Twin{Desired: map[string]any{"n": json.Number("1e400")}, DesiredVersion: 2,
				Reported: map[string]any{"a": map[string]any{"b": []any{nil, true}}}, ReportedVersion: 9}},
		{DeviceID: "Member:7", Hub: "hub2", CAs: []*x509.Certificate{ca.cert}, Thumbprints: []string{"AB"}, Revoked: true, Twin: NewTwin()},
	} {
		data, err := encodeRegistryEntry(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``,
		`{}`,
		`null`,
		`{"format_version":1}`,
		`{"format_version":2}`,
		`{"format_version":3}`,
		`{"format_version":1,"device_id":"a","hub":"h","initial_hub":"g","twin":{"desired_version":1,"reported_version":1}}`,
		`{"format_version":2,"device_id":"a","hub":"h","initial_hub":"g","twin":{"desired_version":1,"reported_version":1}}`,
		`{"format_version":1.5}`,
		`{"format_version":1,"device_id":"a","hub":"h","twin":{"desired":null,"desired_version":1,"reported_version":1}}`,
		`{"format_version":1,"device_id":"../a","hub":"h","twin":{"desired_version":1,"reported_version":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeRegistryEntry(data)
		if err != nil {
			return
		}
		if d.DeviceID == "" || d.Hub == "" || d.Twin.DesiredVersion < 1 || d.Twin.ReportedVersion < 1 ||
			d.Twin.Desired == nil || d.Twin.Reported == nil {
			t.Fatalf("%q read into a device the hub cannot use: %+v", data, d)
		}
		checkRegistryFileName(t, strings.ToLower(d.DeviceID))
		written, err := encodeRegistryEntry(d)
		if err != nil {
			t.Fatalf("%q read, but does not write back: %v", data, err)
		}
		again, err := decodeRegistryEntry(written)
		if err != nil {
			t.Fatalf("%q read, but what it writes back does not: %v\n%s", data, err, written)
		}
		if rewritten, _ := encodeRegistryEntry(again); !bytes.Equal(rewritten, written) {
			t.Fatalf("%q: written back, it reads differently:\n%s\nthen\n%s", data, written, rewritten)
		}
	})
}

// Every key gets a plain file name of its own: no separator, never hidden,
// short enough for its temporary file's name too, and different keys get
// different names.
func FuzzRegistryFileName(f *testing.F) {
	for _, s := range [][2]string{
		{"gw-1", "gw-2"}, {"a:b", "a%3ab"}, {".", ".."}, {"", "%"}, {strings.Repeat("é", 100), strings.Repeat("é", 101)},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		checkRegistryFileName(t, a)
		if a != b && registryFileName(a) == registryFileName(b) {
			t.Fatalf("keys %q and %q share file %q", a, b, registryFileName(a))
		}
	})
}

func checkRegistryFileName(t *testing.T, key string) {
	t.Helper()
	name := registryFileName(key)
	switch {
	case !strings.HasSuffix(name, ".json") || len(name) > registryFileNameMax+len(".json"):
		t.Fatalf("key %q: file name %q", key, name)
	case key != "" && strings.HasPrefix(name, "."):
		t.Fatalf("key %q: hidden file name %q", key, name)
	case strings.ContainsAny(name, "/\x00"):
		t.Fatalf("key %q: file name %q is not one path element", key, name)
	}
}
