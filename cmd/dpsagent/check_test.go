package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	emu "github.com/dpsagent/dpsagent/emulator"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// checkEnv is an in-process emulator and a swtpm, and a configuration for them.
func checkEnv(t *testing.T, enrollments ...emu.Enrollment) (cfgPath string, ep *emu.Endpoints) {
	t.Helper()
	e, err := emu.New(emu.Config{
		DPS:         emu.ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:        []emu.HubConfig{{Name: "hub1", Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin:       emu.ListenerConfig{Listen: "127.0.0.1:0"},
		Enrollments: enrollments,
	}, t.TempDir(), emu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err = e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "onboarding.key")
	if err := os.WriteFile(key, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, hubPort, _ := net.SplitHostPort(ep.Hubs["hub1"].Address)
	cfg := fmt.Sprintf("id_scope: %s\nregistration_id: gw\nonboarding: {symmetric_key_file: %s}\nadvanced:\n  dps_endpoint: %s\n  trust_bundle_file: %s\n  tpm: %s\n  state_dir: %s\n  hub_port: %s\n",
		ep.IDScope, key, ep.DPS, ep.TLSCAFile, sw.Spec, filepath.Join(dir, "state"), hubPort)
	cfgPath = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, ep
}

func runCheck(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"check"}, args...), &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestCheckFreshGatewayPasses(t *testing.T) {
	cfg, _ := checkEnv(t)
	code, out := runCheck(t, "-c", cfg)
	if code != exitOK || !strings.Contains(out, "All checks passed.") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"✓ configuration", "✓ onboarding key", "✓ TPM", "✓ key algorithm", "✓ DPS TCP", "✓ DPS TLS", "does not exist yet"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckFailuresCarryTheFix(t *testing.T) {
	cfg, _ := checkEnv(t)
	data, _ := os.ReadFile(cfg)
	broken := strings.Replace(string(data), "trust_bundle_file:", "# trust_bundle_file:", 1)
	broken = strings.Replace(broken, "tpm: tcp:", "tpm: tcp:127.0.0.1:1 #", 1)
	if err := os.WriteFile(cfg, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runCheck(t, "-c", cfg, "--json")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d:\n%s", code, exitFailure, out)
	}
	var results []checkResult
	if err := json.Unmarshal([]byte(out[:strings.LastIndex(out, "]")+1]), &results); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	byName := map[string]checkResult{}
	for _, r := range results {
		byName[r.Name] = r
	}
	if r := byName["TPM"]; r.OK || !strings.Contains(r.Detail, "connection refused") || r.Hint == "" {
		t.Errorf("TPM check: %+v", r)
	}
	if r := byName["DPS TLS"]; r.OK || !strings.Contains(r.Hint, "trust_bundle_file") {
		t.Errorf("TLS check: %+v", r)
	}
	if r := byName["DPS TCP"]; !r.OK {
		t.Errorf("TCP check should pass: %+v", r)
	}
}

func TestCheckBadConfiguration(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("id_scope: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runCheck(t, "-c", p)
	if code != exitFailure || !strings.Contains(out, "✗ configuration") || !strings.Contains(out, "dpsagent init") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// A provisioned gateway: the stored identity is checked against the key in
// the TPM, and the assigned hub is reached.
func TestCheckProvisionedGateway(t *testing.T) {
	cfg, _ := checkEnv(t, emu.Enrollment{RegistrationID: "gw",
		Attestation: emu.Attestation{Type: emu.AttestSymmetricKey, PrimaryKey: "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="}})
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"provision", "-c", cfg, "--timeout", "60s"}, &out, &errOut); code != exitOK {
		t.Fatalf("provision: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	code, text := runCheck(t, "-c", cfg)
	if code != exitOK {
		t.Fatalf("exit %d:\n%s", code, text)
	}
	for _, want := range []string{"✓ hub TCP", "✓ hub TLS", "✓ identity", "matches the ecdsa-p384 key in tpm", "left"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

// A daemon that cannot be asked (here: a socket that answers garbage) is not
// a stopped daemon: check says what failed and leaves the TPM alone, which
// the daemon may be using.
func TestCheckUnansweringDaemon(t *testing.T) {
	cfgPath, _ := checkEnv(t)
	cfg, err := loadConfig(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(runtimeDir(cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", socketPath(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("not HTTP at all\r\n\r\n"))
			c.Close()
		}
	}()
	code, out := runCheck(t, "-c", cfgPath)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d:\n%s", code, exitFailure, out)
	}
	for _, want := range []string{"✗ local API", "group dpsagent", "! TPM", "not looked at"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
