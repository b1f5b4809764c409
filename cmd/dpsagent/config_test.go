package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configDir writes a config and a 0600 onboarding key; it returns the config path.
func configDir(t testing.TB, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "onboarding.key")
	if err := os.WriteFile(key, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml = strings.ReplaceAll(yaml, "KEYFILE", key)
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimalConfig = `
id_scope: 0ne00000001
registration_id: gateway-001
onboarding:
  symmetric_key_file: KEYFILE
`

func TestLoadConfigDefaultsAndOverrides(t *testing.T) {
	p := configDir(t, minimalConfig)
	cfg, err := loadConfig(p, []string{"DPSAGENT_ADVANCED_DPS_ENDPOINT=127.0.0.1:8883", "DPSAGENT_ADVANCED_HUB_PORT=9883", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity != "x509" || cfg.Onboarding.Method != "symmetric_key" || cfg.Advanced.TPM != "/dev/tpmrm0" ||
		cfg.Advanced.StateDir != "/var/lib/dpsagent" || cfg.Advanced.KeyAlgorithm != "auto" {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.Advanced.DPSEndpoint != "127.0.0.1:8883" || cfg.Advanced.HubPort != 9883 {
		t.Errorf("environment overrides not applied: %+v", cfg.Advanced)
	}
	key, err := cfg.deviceKey()
	if err != nil || len(key) != 32 {
		t.Fatalf("key: %d bytes, %v", len(key), err)
	}
}

func TestLoadConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		env  []string
		want string
	}{
		{minimalConfig + "colour: red\n", nil, `unknown key "colour"`},
		{minimalConfig + "advanced:\n  dps_endpont: x\n", nil, `unknown key "advanced.dps_endpont"`},
		{strings.Replace(minimalConfig, "0ne00000001", "scope", 1), nil, `id_scope "scope"`},
		{strings.Replace(minimalConfig, "gateway-001", "-gw", 1), nil, `registration_id "-gw"`},
		{minimalConfig + "identity: magic\n", nil, `identity "magic": use x509`},
		{minimalConfig + "advanced:\n  key_algorithm: dsa\n", nil, "advanced.key_algorithm"},
		{minimalConfig + "advanced:\n  renewal: {threshold: 120%}\n", nil, "advanced.renewal"},
		{minimalConfig + "advanced:\n  hub_port: 0\n", nil, "advanced.hub_port 0"},
		{minimalConfig, []string{"DPSAGENT_NOPE=1"}, "DPSAGENT_NOPE names no configuration key"},
		{minimalConfig, []string{"DPSAGENT_ADVANCED_HUB_PORT=eighty"}, "hub_port"},
		{strings.Replace(minimalConfig, "KEYFILE", "/nonexistent.key", 1), nil, "onboarding.symmetric_key_file"},
		{"id_scope: 0ne00000001\nregistration_id: gw\nidentity: sas\nonboarding:\n  method: x509\n  x509: {certificate_file: c.pem, key: 'file:k.pem'}\n", nil, "identity sas needs"},
		{"id_scope: [unclosed", nil, "not valid YAML"},
		{"id_scope: 0ne00000001\n\tregistration_id: gw\n", nil, "not valid YAML: yaml: line 2"},
		{minimalConfig + "id_scope: 0ne00000002\n", nil, `mapping key "id_scope" already defined`},
		{"- id_scope: 0ne00000001\n", nil, "line 1: the file must be a mapping of keys (such as id_scope: 0ne00000001), not a list"},
		{"0ne00000001\n", nil, "not a single value"},
		{"", nil, `id_scope ""`}, // an empty file is every key at its default
		{minimalConfig + "advanced:\n", nil, `unknown key "advanced"`},
		// viper folds case, and would keep one of the two without a word.
		{minimalConfig + "advanced:\n  hub_port: 9000\n  tpm: none\n  HUB_PORT: 9001\n", nil,
			`lines 7 and 9: the keys "hub_port" and "HUB_PORT" differ only in case, and keys ignore case: keep one`},
		{minimalConfig + "Advanced: {tpm: none}\nadvanced:\n  hub_port: 9000\n", nil, `lines 6 and 7: the keys "Advanced" and "advanced"`},
		{minimalConfig + "x: &x {Hub_Port: 1}\nadvanced:\n  <<: *x\n  hub_port: 9000\n", nil, `lines 6 and 9: the keys "Hub_Port" and "hub_port"`},
	} {
		_, err := loadConfig(configDir(t, tc.yaml), tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %v\n  error = %v\n  want it to contain %q", tc.yaml, tc.env, err, tc.want)
		}
	}
}

func TestLoadConfigRefusesReadableSecrets(t *testing.T) {
	p := configDir(t, minimalConfig)
	key := filepath.Join(filepath.Dir(p), "onboarding.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(p, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key: err = %v", err)
	}
}

func TestLoadConfigMissingIsDistinct(t *testing.T) {
	_, err := loadConfig(filepath.Join(t.TempDir(), "none.yaml"), nil)
	if !errors.Is(err, errNoConfig) || !strings.Contains(err.Error(), "dpsagent init") {
		t.Fatalf("err = %v", err)
	}
}

func TestRenewalHookMustBeAnAbsoluteExecutable(t *testing.T) {
	for _, hook := range []string{"on-renew.sh", "/nonexistent/hook"} {
		_, err := loadConfig(configDir(t, minimalConfig+"advanced:\n  renewal: {hook: "+hook+"}\n"), nil)
		if err == nil || !strings.Contains(err.Error(), "advanced.renewal.hook") {
			t.Errorf("hook %q: err = %v", hook, err)
		}
	}
}

// FuzzLoadConfig: whatever the file holds, loading it gives a configuration
// or an error naming the file, never a panic.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{minimalConfig, minimalConfig + "advanced:\n  hub_port: 8884\n  renewal: {threshold: 7d}\n",
		"- a\n", "a: &x [*x]\n", "id_scope: !!binary aGVsbG8=\n", "? [a]\n: b\n", "advanced: {tpm: {x: 1}}\n",
		"a: &x {<<: *x}\n", "a: &a {k: 1}\nb: {<<: [*a, {K: 2}]}\n", "<<: {a: {b: 1}, A: 2}\n", "a: 1\n'<<': {A: 2}\n"} {
		f.Add([]byte(seed))
	}
	p := configDir(f, "")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(p, nil)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("loadConfig = %v, %v: want exactly one", cfg, err)
		}
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Fatalf("the error does not name the file: %v", err)
		}
	})
}
