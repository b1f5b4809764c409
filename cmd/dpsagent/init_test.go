package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// closedTPM is a TPM address where nothing listens, as the brief of a
// technician with a mistyped emulator port would have it.
const closedTPM = "tcp:127.0.0.1:1"

// initKeyFile writes a symmetric key file with the given mode.
func initKeyFile(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "onboarding.key")
	if err := os.WriteFile(p, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// initBirth writes a self-signed birth certificate for cn and its PKCS#8 key
// (mode 0600); it returns both paths.
func initBirth(t *testing.T, dir, cn string) (certPath, keyPath string) {
	t.Helper()
	certPEM, keyPEM := birthPEM(t, cn, nil)
	certPath, keyPath = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// runInitWith runs the command tree in process, as run does, with stdin: run
// itself leaves stdin to cobra, which is the test binary's own.
func runInitWith(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runInitCtx(t, context.Background(), stdin, args...)
}

func runInitCtx(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: os.Getenv}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK, out.String(), errOut.String()
	}
	errOut.WriteString("dpsagent: " + err.Error() + "\n")
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code, out.String(), errOut.String()
	}
	return exitConfig, out.String(), errOut.String()
}

// yamlKeys lists a mapping's keys in file order; path descends into nested maps.
func yamlKeys(t *testing.T, data []byte, path ...string) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("the written configuration is not YAML: %v\n%s", err, data)
	}
	m := doc.Content[0]
	for _, p := range path {
		var next *yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == p {
				next = m.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		m = next
	}
	var keys []string
	for i := 0; i+1 < len(m.Content); i += 2 {
		keys = append(keys, m.Content[i].Value)
	}
	return keys
}

func TestInitNonInteractiveWritesWhatTheServiceLoads(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "etc", "dpsagent", "config.yaml") // the directory does not exist yet

	code, stdout, stderr := runCLI(t, "init", "--non-interactive", "--config", path,
		"--id-scope", "0ne0000ABCD", "--registration-id", "gateway-001", "--symmetric-key-file", keyFile, "--group-key",
		"--tpm", closedTPM, "--hub-port", "8884", "--renewal-threshold", "7d")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatalf("the service would not load what init wrote: %v", err)
	}
	if cfg.IDScope != "0ne0000ABCD" || cfg.RegistrationID != "gateway-001" || cfg.Onboarding.Method != OnboardSymmetricKey ||
		cfg.Onboarding.SymmetricKeyFile != keyFile || !cfg.Onboarding.GroupKey || cfg.Advanced.TPM != closedTPM ||
		cfg.Advanced.HubPort != 8884 || cfg.Advanced.Renewal.Threshold != "7d" {
		t.Errorf("loaded %+v", cfg)
	}
	for p, want := range map[string]os.FileMode{path: 0o640, filepath.Dir(path): 0o750} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", p, got, want)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(yamlKeys(t, data), " "), "id_scope registration_id identity onboarding advanced"; got != want {
		t.Errorf("top-level keys %q, want %q\n%s", got, want, data)
	}
	if got, want := strings.Join(yamlKeys(t, data, "onboarding"), " "), "method symmetric_key_file group_key x509"; got != want {
		t.Errorf("onboarding keys %q, want %q", got, want)
	}
	if got, want := strings.Join(yamlKeys(t, data, "advanced"), " "), "tpm hub_port renewal"; got != want {
		t.Errorf("advanced keys %q, want only the changed ones, %q\n%s", got, want, data)
	}
	// The TPM that is not there is explained, and does not stop init.
	for _, want := range []string{"connect to the TPM at " + closedTPM, "can still be written", "dpsagent tpm info --tpm " + closedTPM} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout does not say %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{"dpsagent check --config " + path, "systemctl enable --now dpsagent", "dpsagent provision --config " + path} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout does not give the next command %q:\n%s", want, stdout)
		}
	}
}

func TestInitOmitsDefaultAdvancedSettings(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	// Every advanced setting given, each at its default, except the TPM: the
	// default device may or may not exist here, and either way init goes on.
	code, stdout, stderr := runCLI(t, "init", "--non-interactive", "--config", path,
		"--id-scope", "0ne00000001", "--registration-id", "gateway-001", "--symmetric-key-file", keyFile,
		"--dps-endpoint", "global.azure-devices-provisioning.net", "--key-algorithm", "auto",
		"--renewal-threshold", "80%", "--hub-port", "8883", "--trust-bundle-file", "")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if keys := yamlKeys(t, data, "advanced"); keys != nil || bytes.Contains(data, []byte("advanced")) {
		t.Errorf("advanced written with only default values (%v):\n%s", keys, data)
	}
	if !strings.Contains(stdout, "Advanced          the defaults") {
		t.Errorf("the summary does not say the advanced settings are the defaults:\n%s", stdout)
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	path := filepath.Join(dir, "config.yaml")
	args := func(regID string, extra ...string) []string {
		return append([]string{"init", "--non-interactive", "--config", path, "--id-scope", "0ne00000001",
			"--registration-id", regID, "--symmetric-key-file", keyFile, "--tpm", closedTPM}, extra...)
	}
	if code, stdout, stderr := runCLI(t, args("gateway-001")...); code != exitOK {
		t.Fatalf("first init: exit %d\n%s%s", code, stdout, stderr)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	code, _, stderr := runCLI(t, args("gateway-002", "--yes")...)
	if code != exitConfig || !strings.Contains(stderr, path+" already exists") || !strings.Contains(stderr, "--force") {
		t.Errorf("second init without --force: exit %d, want %d and a hint to --force:\n%s", code, exitConfig, stderr)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("the existing configuration changed:\n%s", after)
	}

	if code, stdout, stderr := runCLI(t, args("gateway-002", "--force")...); code != exitOK {
		t.Fatalf("init --force: exit %d\n%s%s", code, stdout, stderr)
	}
	cfg, err := loadConfig(path, nil)
	if err != nil || cfg.RegistrationID != "gateway-002" {
		t.Errorf("after --force: %+v, %v; want registration ID gateway-002", cfg, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("after --force: %v, %v; want mode 0640", fi.Mode(), err)
	}
}

func TestInitRefusesBadValues(t *testing.T) {
	dir := t.TempDir()
	keyFile := initKeyFile(t, dir, 0o600)
	open := filepath.Join(t.TempDir(), "onboarding.key")
	if err := os.WriteFile(open, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key := initBirth(t, dir, "gateway-001")
	openKey := filepath.Join(dir, "open.key")
	if data, err := os.ReadFile(key); err != nil || os.WriteFile(openKey, data, 0o644) != nil || os.Chmod(openKey, 0o644) != nil {
		t.Fatal("copy the birth key")
	}
	pemKey := filepath.Join(dir, "pem.key") // a certificate where the key should be, private
	if data, err := os.ReadFile(cert); err != nil || os.WriteFile(pemKey, data, 0o600) != nil {
		t.Fatal("copy the birth certificate")
	}
	path := filepath.Join(dir, "config.yaml")
	base := func(extra ...string) []string {
		return append([]string{"init", "--non-interactive", "--config", path, "--tpm", closedTPM,
			"--id-scope", "0ne00000001", "--registration-id", "gateway-001", "--symmetric-key-file", keyFile}, extra...)
	}
	x509 := func(extra ...string) []string {
		return append([]string{"init", "--non-interactive", "--config", path, "--tpm", closedTPM,
			"--id-scope", "0ne00000001", "--registration-id", "gateway-001"}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr: the flag, the value, a valid example or the fix
	}{
		{"short ID scope", base("--id-scope", "0ne123"), []string{`--id-scope "0ne123"`, "0ne00000001"}},
		{"ID scope not hex", base("--id-scope", "0ne0000000Z"), []string{`--id-scope "0ne0000000Z"`, "8 hexadecimal digits"}},
		{"registration ID", base("--registration-id", "-gw-"), []string{`--registration-id "-gw-"`, "gateway-001"}},
		{"onboarding method", base("--onboarding", "password"), []string{`--onboarding "password"`, "symmetric_key", "x509"}},
		{"no key file", base("--symmetric-key-file", "/nonexistent/onboarding.key"), []string{`--symmetric-key-file "/nonexistent/onboarding.key"`, "no file", "chmod 600"}},
		{"key file readable by others", base("--symmetric-key-file", open), []string{"--symmetric-key-file", "mode 0644", "chmod 600 " + open}},
		{"key file not a key", base("--symmetric-key-file", pemKey), []string{"--symmetric-key-file", "PEM file, not a symmetric key"}},
		{"key algorithm", base("--key-algorithm", "ecdsa-p521"), []string{`--key-algorithm: unknown key algorithm "ecdsa-p521"`, "ecdsa-p384"}},
		{"hub port out of range", base("--hub-port", "0"), []string{`--hub-port "0"`, "8883"}},
		{"hub port not a number", base("--hub-port", "mqtt"), []string{`--hub-port "mqtt"`, "8883"}},
		{"renewal threshold", base("--renewal-threshold", "120%"), []string{"--renewal-threshold", `"120%"`, "80%"}},
		{"DPS endpoint", base("--dps-endpoint", "https://global.azure-devices-provisioning.net"), []string{"--dps-endpoint", "without a scheme"}},
		{"trust bundle", base("--trust-bundle-file", "/nonexistent/ca.pem"), []string{"--trust-bundle-file", "/nonexistent/ca.pem", "PEM file of CA certificates"}},
		{"TPM string", base("--tpm", "swtpm"), []string{`--tpm: TPM not understood: "swtpm"`, "tcp:HOST:PORT"}},
		{"no ID scope", []string{"init", "--non-interactive", "--config", path, "--registration-id", "gateway-001"}, []string{"--id-scope is required", "0ne00000001"}},
		{"no registration ID", []string{"init", "--non-interactive", "--config", path, "--id-scope", "0ne00000001"}, []string{"--registration-id is required", "gateway-001"}},
		{"x509 flag with symmetric key", base("--onboarding", "symmetric_key", "--x509-key", "file:"+key), []string{"--x509-key is for --onboarding x509"}},
		{"both methods' flags", x509("--symmetric-key-file", keyFile, "--x509-certificate-file", cert), []string{"--symmetric-key-file and --x509-certificate-file", "--onboarding"}},
		{"certificate for another device", x509("--registration-id", "gateway-002", "--x509-certificate-file", cert, "--x509-key", "file:"+key), []string{"--x509-certificate-file", `common name is "gateway-001"`, "--registration-id gateway-001"}},
		{"certificate file missing", x509("--x509-certificate-file", "/nonexistent/birth.pem", "--x509-key", "file:"+key), []string{`--x509-certificate-file "/nonexistent/birth.pem"`, "no file"}},
		{"birth key readable by others", x509("--x509-certificate-file", cert, "--x509-key", "file:"+openKey), []string{"--x509-key", "chmod 600 " + openKey}},
		{"birth key form", x509("--x509-certificate-file", cert, "--x509-key", key), []string{`--x509-key "` + key + `"`, "tpm-blob:PATH", "file:PATH"}},
		{"accessible and non-interactive", base("--accessible"), []string{"--accessible", "--non-interactive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != exitConfig {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitConfig, stdout, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a configuration was written for bad input: %v", err)
			}
		})
	}
}

func TestInitWithoutATerminalAsksNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	code, stdout, stderr := runInitWith(t, strings.NewReader("0ne00000001\n"), "init", "--config", path)
	if code != exitConfig {
		t.Errorf("exit %d, want %d", code, exitConfig)
	}
	for _, want := range []string{"--id-scope is required", "stdin is not a terminal", "--accessible"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stdout, "Step 1") {
		t.Errorf("the wizard ran without a terminal:\n%s", stdout)
	}
}

func TestInitX509AndRelativePaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	initBirth(t, dir, "gateway-001")
	blob := filepath.Join(dir, "birth.tpm")
	if err := os.WriteFile(blob, []byte("blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, want string }{
		{"file:gateway-001.key", "file:" + filepath.Join(dir, "gateway-001.key")},
		{"tpm-blob:birth.tpm", "tpm-blob:" + blob},
	} {
		path := filepath.Join(dir, "config.yaml")
		code, stdout, stderr := runCLI(t, "init", "--non-interactive", "--force", "--config", path, "--tpm", closedTPM,
			"--id-scope", "0ne00000001", "--registration-id", "gateway-001",
			"--x509-certificate-file", "gateway-001.pem", "--x509-key", tc.key)
		if code != exitOK {
			t.Fatalf("%s: exit %d\n%s%s", tc.key, code, stdout, stderr)
		}
		cfg, err := loadConfig(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Onboarding.Method != OnboardX509 || cfg.Onboarding.X509.CertificateFile != filepath.Join(dir, "gateway-001.pem") || cfg.Onboarding.X509.Key != tc.want {
			t.Errorf("%s: onboarding %+v; want x509 with absolute paths (the service does not run in this directory)", tc.key, cfg.Onboarding)
		}
		if !strings.Contains(stdout, `(for "gateway-001", valid until 2045-01-01)`) {
			t.Errorf("the summary does not describe the birth certificate:\n%s", stdout)
		}
	}
}

func TestInitKnowsEveryConfigurationKey(t *testing.T) {
	def, err := defaultConfig()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range configSettings(&def) {
		seen[s.key] = true
		if _, ok := configDefaults[s.key]; !ok {
			t.Errorf("init would write %q, which the loader does not know", s.key)
		}
	}
	for k := range configDefaults {
		if !seen[k] {
			t.Errorf("init does not see the key %q: it would drop it when rewriting a configuration", k)
		}
	}
}
