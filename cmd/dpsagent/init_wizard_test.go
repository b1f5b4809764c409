package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// answers is what a technician types, one line per prompt ("" is Enter alone).
func answers(lines ...string) *strings.Reader {
	return strings.NewReader(strings.Join(lines, "\n") + "\n")
}

// wizard runs `dpsagent init --accessible` with scripted answers.
func runWizard(t *testing.T, path string, in *strings.Reader, flags ...string) (code int, stdout, stderr string) {
	t.Helper()
	args := append([]string{"init", "--accessible", "--config", path}, flags...)
	code, stdout, stderr = runInitWith(t, in, args...)
	t.Logf("transcript:\n%s", stdout)
	return code, stdout, stderr
}

func TestInitWizardCorrectsWrongAnswers(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	openKey := initKeyFile(t, t.TempDir(), 0o644)
	path := filepath.Join(dir, "etc", "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne123",      // ID scope: too short
		"0ne00000001", // corrected
		"-gateway-",   // registration ID: starts with a symbol
		"gateway-007", // corrected
		"1",           // symmetric key
		filepath.Join(dir, "missing.key"),
		openKey, // readable by others
		keyFile,
		"y", // a group key
		"",  // no advanced settings
		"1", // write it
	), "--tpm", closedTPM)
	if code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"ID scope: 0ne123\n  ✗ not an ID scope: 0ne and 8 hexadecimal digits, such as 0ne00000001",
		"✓ ID scope: 0ne00000001",
		"]: -gateway-\n  ✗ not a registration ID DPS accepts, such as gateway-001",
		"✓ Registration ID: gateway-007",
		"there is no file " + filepath.Join(dir, "missing.key"),
		"has mode 0644, readable by others: run chmod 600 " + openKey,
		"✓ Key file: " + keyFile + " (an enrollment group's key)",
		// The TPM cannot be reached: the wizard says why and what to do, and goes on.
		"✗ connect to the TPM at " + closedTPM,
		"start swtpm",
		"The configuration can still be written",
		"Step 6 of 6 · Summary",
		"dpsagent check --config " + path,
		"systemctl enable --now dpsagent",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the transcript does not contain %q", want)
		}
	}
	if strings.Contains(stdout, "\x1b") {
		t.Errorf("the transcript holds terminal escape codes, which screen readers and logs show as noise")
	}
	if n := strings.Count(stdout, "\nID scope"); n != 2 {
		t.Errorf("the ID scope was asked %d times, want 2 (once more after the wrong answer)", n)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatalf("the service would not load what the wizard wrote: %v", err)
	}
	if cfg.IDScope != "0ne00000001" || cfg.RegistrationID != "gateway-007" || cfg.Onboarding.SymmetricKeyFile != keyFile ||
		!cfg.Onboarding.GroupKey || cfg.Advanced.TPM != closedTPM {
		t.Errorf("loaded %+v", cfg)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, %v; want 0640", fi.Mode(), err)
	}
}

func TestInitWizardAdvancedSettings(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne00000001", "gateway-001", "1", keyFile, "n",
		"maybe", // change advanced settings: neither yes nor no
		"y",     // corrected
		"",      // DPS endpoint kept
		"9",     // key algorithm: no such option
		"3",     // ecdsa-p384
		"7x",    // renewal threshold: not a duration
		"36h",   // corrected
		"",      // no trust bundle
		"99999", // hub port out of range
		"8884",  // corrected
		"",      // TPM kept
		"1",
	), "--tpm", closedTPM)
	if code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		`Change advanced settings? [y/N] maybe` + "\n" + `  ✗ "maybe": answer y (yes) or n (no)`,
		"  4. rsa-2048\nChoose 1 to 4 [1]: 9\n  ✗ \"9\": enter a number from 1 to 4",
		"not a share of the lifetime", "use a TCP port from 1 to 65535, normally 8883", "hub_port 8884",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the transcript does not contain %q", want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(yamlKeys(t, data, "advanced"), " "), "tpm key_algorithm hub_port renewal"; got != want {
		t.Errorf("advanced keys %q, want %q (only the changed ones)\n%s", got, want, data)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Advanced.KeyAlgorithm != "ecdsa-p384" || cfg.Advanced.HubPort != 8884 || cfg.Advanced.Renewal.Threshold != "36h" ||
		cfg.Advanced.DPSEndpoint != "global.azure-devices-provisioning.net" {
		t.Errorf("advanced %+v", cfg.Advanced)
	}
}

func TestInitWizardExistingConfig(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	if code, stdout, stderr := runCLI(t, "init", "--non-interactive", "--config", path, "--tpm", closedTPM,
		"--id-scope", "0ne0000ABCD", "--registration-id", "gateway-001", "--symmetric-key-file", keyFile); code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("kept", func(t *testing.T) {
		code, stdout, stderr := runWizard(t, path, answers(""))
		if code != exitFailure || !strings.Contains(stderr, "nothing written") {
			t.Errorf("declining to replace: exit %d, want %d and \"nothing written\"\n%s", code, exitFailure, stderr)
		}
		if !strings.Contains(stdout, "Replace it? [y/N]") {
			t.Errorf("the wizard did not ask before replacing:\n%s", stdout)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
			t.Errorf("the configuration changed:\n%s", after)
		}
	})
	t.Run("replaced, starting from its answers", func(t *testing.T) {
		code, stdout, stderr := runWizard(t, path, answers("y", "", "gateway-002", "", "", "", "", "1"))
		if code != exitOK {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "ID scope [0ne0000ABCD]:") {
			t.Errorf("the ID scope question does not offer the existing answer:\n%s", stdout)
		}
		cfg, err := loadConfig(path, nil)
		if err != nil || cfg.IDScope != "0ne0000ABCD" || cfg.RegistrationID != "gateway-002" || cfg.Advanced.TPM != closedTPM {
			t.Errorf("loaded %+v, %v", cfg, err)
		}
	})
}

func TestInitWizardStopsWithoutWriting(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	for _, tc := range []struct {
		name   string
		script *strings.Reader
		want   string
	}{
		{"stdin ends", answers("0ne00000001", "gateway-001"), "stdin ended"},
		{"quit at the summary", answers("0ne00000001", "gateway-001", "1", keyFile, "n", "n", "3"), "nothing written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			code, _, stderr := runWizard(t, path, tc.script, "--tpm", closedTPM)
			if code != exitFailure || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d and %q:\n%s", code, exitFailure, tc.want, stderr)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("a configuration was written: %v", err)
			}
		})
	}
}

func TestInitWizardChangeAnAnswer(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne00000001", "gateway-001", "1", keyFile, "n", "n",
		"2", // change an answer: the questions again, starting from these
		"", "gateway-009", "", "", "", "",
		"1",
	), "--tpm", closedTPM)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "Registration ID [gateway-001]:") {
		t.Errorf("the second round does not start from the first round's answers:\n%s", stdout)
	}
	if cfg, err := loadConfig(path, nil); err != nil || cfg.RegistrationID != "gateway-009" || cfg.IDScope != "0ne00000001" {
		t.Errorf("loaded %+v, %v", cfg, err)
	}
}

func TestInitWizardBirthCertificateNamesTheDevice(t *testing.T) {
	dir := t.TempDir()
	cert, key := initBirth(t, dir, "gateway-042")
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne00000001", "gateway-001",
		"2", // X.509 birth certificate
		cert,
		key, // not a key form
		"file:"+key,
		"n", "1",
	), "--tpm", closedTPM)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"use tpm-blob:PATH", "the registration ID is now gateway-042 (it was gateway-001)", `(for "gateway-042", valid until 2045-01-01)`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the transcript does not contain %q", want)
		}
	}
	cfg, err := loadConfig(path, nil)
	if err != nil || cfg.RegistrationID != "gateway-042" || cfg.Onboarding.Method != OnboardX509 || cfg.Onboarding.X509.Key != "file:"+key {
		t.Errorf("loaded %+v, %v", cfg, err)
	}
}

func TestInitWizardFindsTheTPM(t *testing.T) {
	spec, info := swtpmInfo(t)
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne00000001", "gateway-001", "1", keyFile, "n", "n", "1",
	), "--tpm", spec)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	line := lineStarting(stdout, "  ✓ "+info.Manufacturer)
	for _, want := range []string{"at " + spec, "firmware " + info.FirmwareVersion, "keys ecdsa-p256, ecdsa-p384, rsa-2048", "auto picks ecdsa-p384"} {
		if !strings.Contains(line, want) {
			t.Errorf("the TPM line %q does not say %q\n%s", line, want, stdout)
		}
	}
}

func TestInitWizardAsksAgainForATPMStringThatNamesNone(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		"0ne00000001", "gateway-001", "1", keyFile, "n",
		"none", // the TPM, asked again: the software key
		"n", "1",
	), "--tpm", "swtpm")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, `✗ TPM not understood: "swtpm"`) || !strings.Contains(stdout, "• none: the agent keeps its key in a file") {
		t.Errorf("the wizard did not explain the TPM string and take the new one:\n%s", stdout)
	}
	if cfg, err := loadConfig(path, nil); err != nil || cfg.Advanced.TPM != tpmNone {
		t.Errorf("loaded %+v, %v", cfg, err)
	}
}

func TestInitWizardKeepsSettingsItDoesNotAsk(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	hook := filepath.Join(dir, "renewed.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	old := "id_scope: 0ne00000001\nregistration_id: gateway-001\nonboarding:\n  symmetric_key_file: " + keyFile + "\n" +
		"advanced:\n  tpm: " + closedTPM + "\n  state_dir: /srv/dpsagent\n  metrics_listen: 127.0.0.1:9464\n" +
		"  renewal:\n    jitter: 2.5%\n    hook: " + hook + "\n"
	if err := os.WriteFile(path, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runWizard(t, path, answers("y", "", "gateway-002", "", "", "", "", "1"))
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Advanced
	if cfg.RegistrationID != "gateway-002" || a.StateDir != "/srv/dpsagent" || a.MetricsListen != "127.0.0.1:9464" ||
		a.Renewal.Jitter != "2.5%" || a.Renewal.Hook != hook || a.TPM != closedTPM {
		t.Errorf("after the wizard: %+v; want the settings it did not ask about kept", cfg)
	}
}

// Ctrl+C in a terminal cancels the context (main turns SIGINT into that);
// the wizard must stop even while it waits for a line.
func TestInitWizardStopsOnInterrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	stdin, typist := io.Pipe() // a technician who types nothing
	defer typist.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	done := make(chan struct{})
	var code int
	var stderr string
	go func() {
		defer close(done)
		code, _, stderr = runInitCtx(t, ctx, stdin, "init", "--accessible", "--config", path)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the wizard did not stop when interrupted")
	}
	if code != exitFailure || !strings.Contains(stderr, "nothing written") {
		t.Errorf("exit %d, want %d and \"nothing written\":\n%s", code, exitFailure, stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a configuration was written: %v", err)
	}
}

// - alone clears an optional answer; a required one refuses the empty value
// with its usual reason.
func TestInitWizardClearsAnAnswerWithADash(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	bundle, _ := initBirth(t, dir, "emulator-ca")
	path := filepath.Join(dir, "config.yaml")
	old := "id_scope: 0ne00000001\nregistration_id: gateway-001\nonboarding:\n  symmetric_key_file: " + keyFile + "\n" +
		"advanced:\n  tpm: " + closedTPM + "\n  trust_bundle_file: " + bundle + "\n"
	if err := os.WriteFile(path, []byte(old), 0o640); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runWizard(t, path, answers(
		"y", "", "", "", "", "",
		"y",     // change advanced settings
		"-", "", // DPS endpoint: required, so not cleared; then kept
		"",      // key algorithm kept
		"",      // renewal threshold kept
		"-",     // trust bundle cleared
		"",      // hub port kept
		"-", "", // TPM: required, so not cleared; then kept
		"1",
	))
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		"Enter alone keeps a setting; - clears it.",
		"DPS endpoint [global.azure-devices-provisioning.net]: -\n  ✗ ",
		"TPM [" + closedTPM + "]: -\n  ✗ name the TPM",
		`trust bundle ""`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the transcript does not contain %q", want)
		}
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Advanced; a.TrustBundleFile != "" || a.DPSEndpoint != "global.azure-devices-provisioning.net" || a.TPM != closedTPM {
		t.Errorf("advanced %+v; want the trust bundle cleared, the rest kept", a)
	}
}

// An answer line is at most 4096 bytes: a longer one is refused and the rest
// of it skipped, and stdin that never breaks its line stops the wizard.
func TestInitWizardRefusesAnOverlongAnswer(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	code, stdout, stderr := runWizard(t, path, answers(
		strings.Repeat("a", 4097)+"\r", // refused as too long, whatever it is
		strings.Repeat("a", 4097),      // the same without the carriage return
		strings.Repeat("a", 4096)+"\r", // an answer, judged as one
		"0ne00000001", "gateway-001", "1", keyFile, "n", "n", "1",
	), "--tpm", closedTPM)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	const refused = "ID scope: \n  ✗ the answer is over 4096 bytes: refused; type a shorter one\n"
	if strings.Count(stdout, refused) != 2 || !strings.Contains(stdout, refused+"ID scope: aaaa") ||
		!strings.Contains(stdout, "a\n  ✗ not an ID scope") {
		t.Errorf("the transcript does not refuse the 4097-byte lines and judge the 4096-byte one")
	}
	if cfg, err := loadConfig(path, nil); err != nil || cfg.IDScope != "0ne00000001" {
		t.Errorf("loaded %+v, %v", cfg, err)
	}

	// init --accessible < /dev/zero
	zeros := &countingReader{r: io.LimitReader(zeroReader{}, 16<<20)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr = runInitWith(t, zeros, "init", "--accessible", "--config", filepath.Join(dir, "zero.yaml"))
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the wizard still reads a stdin of zeros")
	}
	if code != exitFailure || !strings.Contains(stderr, "stdin sent over 1048576 bytes without a line break") || zeros.n > 2<<20 {
		t.Errorf("stdin of zeros: exit %d after reading %d bytes: %s", code, zeros.n, stderr)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
