package emulator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "iotemu.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	for name, path := range map[string]string{"no file": "", "empty file": writeConfig(t, "")} {
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg.IDScope != "0ne00000001" || cfg.DPS.Listen != "localhost:8883" || cfg.Admin.Listen != "127.0.0.1:8080" {
			t.Errorf("%s: defaults = %+v", name, cfg)
		}
		if len(cfg.Hubs) != 1 || cfg.Hubs[0] != (HubConfig{Name: "hub1", Host: "127.0.0.2", Listen: "127.0.0.2:8883"}) {
			t.Errorf("%s: hubs = %+v", name, cfg.Hubs)
		}
		if time.Duration(cfg.Certificates.Lifetime) != 30*24*time.Hour || cfg.Certificates.CredentialAPIBody != "object" ||
			cfg.Certificates.CredentialAPIConflictCode != 409005 {
			t.Errorf("%s: certificates = %+v", name, cfg.Certificates)
		}
	}
}

func TestLoadConfigFull(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `
id_scope: 0ne0000ABCD
dps: {listen: "127.0.0.1:0"}
hubs:
  - {name: a, host: hub-a.example, listen: "127.0.0.1:0"}
  - {name: b, listen: "127.0.0.3:0"}
admin: {listen: "127.0.0.1:0"}
certificates: {lifetime: 90s, key_types: [ecdsa-p384, rsa-2048], credential_api_delay: 1d12h, credential_api_body: array, credential_api_conflict_code: 409004}
enrollments:
  - registration_id: gw-1
    attestation: {type: symmetric_key, primary_key: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}
    hubs: [b]
    allocation: static
    device_id: gateway-one
  - group_id: fleet
    enabled: false
    issue_certificates: false
    attestation: {type: symmetric_key, primary_key: "Z3JvdXBrZXlncm91cGtleWdyb3Vwa2V5Z3JvdXBrZXk="}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hubs[1].Host != "127.0.0.3" {
		t.Errorf("a hub without host takes its listen host: %q", cfg.Hubs[1].Host)
	}
	if time.Duration(cfg.Certificates.Lifetime) != 90*time.Second || time.Duration(cfg.Certificates.CredentialAPIDelay) != 36*time.Hour ||
		cfg.Certificates.CredentialAPIConflictCode != 409004 {
		t.Errorf("durations = %+v", cfg.Certificates)
	}
	e0, e1 := cfg.Enrollments[0], cfg.Enrollments[1]
	if e0.Allocation != AllocStatic || e0.Reprovision != ReproMigrate || !e0.IsEnabled() || !e0.Issues() || e0.DeviceID != "gateway-one" {
		t.Errorf("individual enrollment = %+v", e0)
	}
	if !e1.IsGroup() || e1.IsEnabled() || e1.Issues() || e1.Allocation != AllocHashed {
		t.Errorf("group enrollment = %+v", e1)
	}
}

func TestLoadConfigErrorsNameTheProblem(t *testing.T) {
	key := `attestation: {type: symmetric_key, primary_key: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}`
	for _, tc := range []struct{ yaml, want string }{
		{"id_scop: x", "field id_scop not found"},
		{"id_scope: short", `id_scope "short"`},
		{"certificates: {lifetime: 30x}", `unknown unit "x"`},
		{"certificates: {lifetime: 0.1s}", "too short"},
		{"certificates: {key_types: [dsa]}", "dsa"},
		{"certificates: {credential_api_body: xml}", "use object or array"},
		{"certificates: {credential_api_conflict_code: 409}", "certificates.credential_api_conflict_code 409: use 409005"},
		{"id_scope: 0ne00000001\n---\nid_scope: 0ne00000002", "more than one YAML document"},
		{"hubs: [{name: a, listen: '127.0.0.1:0'}, {name: a, listen: '127.0.0.1:0'}]", `"a" is used twice`},
		{"enrollments: [{registration_id: -bad-, " + key + "}]", "not starting or ending with a symbol"},
		{"enrollments: [{registration_id: a, group_id: b, " + key + "}]", "not both"},
		{"enrollments: [{registration_id: a, hubs: [nope], " + key + "}]", `no hub named "nope"`},
		{"enrollments: [{registration_id: a, allocation: random, " + key + "}]", "use static, evenly or hashed"},
		{"enrollments: [{registration_id: a, attestation: {type: symmetric_key}}]", "primary_key is required"},
		{"enrollments: [{registration_id: a, attestation: {type: symmetric_key, primary_key: 'not base64!'}}]", "base64"},
		{"enrollments: [{registration_id: a, attestation: {type: tpm}}]", "use symmetric_key or x509"},
		{"enrollments: [{registration_id: a, attestation: {type: x509}}]", "certificate_file is required"},
		{"enrollments: [{group_id: g, attestation: {type: x509, ca_file: /nonexistent.pem}}]", "ca_file"},
		{"enrollments: [{registration_id: a, " + key + "}, {registration_id: A, " + key + "}]", "enrolled twice"},
	} {
		_, err := LoadConfig(writeConfig(t, tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\n  error = %v\n  want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestMergePatch(t *testing.T) {
	props := map[string]any{"a": 1.0, "nested": map[string]any{"x": 1.0, "y": 2.0}, "gone": "soon"}
	MergePatch(props, map[string]any{"gone": nil, "nested": map[string]any{"y": nil, "z": 3.0}, "b": "new", "$version": 9.0})
	want := `{"a":1,"b":"new","nested":{"x":1,"z":3}}`
	if got := mustJSON(t, props); got != want {
		t.Fatalf("after patch: %s, want %s", got, want)
	}
}
