package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// runCLI runs the command tree in process, as main does.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// closedTCPSpec is a tcp: TPM spec where nothing listens.
func closedTCPSpec(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "tcp:" + addr
}

type cliCase struct {
	name       string
	args       []string
	wantCode   int
	wantStdout []string // substrings
	wantStderr []string // substrings
	check      func(t *testing.T, stdout, stderr string)
}

func (tc cliCase) run(t *testing.T) {
	t.Helper()
	code, stdout, stderr := runCLI(t, tc.args...)
	if code != tc.wantCode {
		t.Errorf("dpsagent %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.wantCode, stdout, stderr)
	}
	for _, want := range tc.wantStdout {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, stdout)
		}
	}
	for _, want := range tc.wantStderr {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, stderr)
		}
	}
	if tc.check != nil {
		tc.check(t, stdout, stderr)
	}
}

func TestUsageAndVersion(t *testing.T) {
	for _, tc := range []cliCase{
		{
			name: "version", args: []string{"version"}, wantCode: exitOK,
			wantStdout: []string{"dpsagent dev (built unknown, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"},
		},
		{
			name: "help lists the commands", args: []string{"--help"}, wantCode: exitOK,
			wantStdout: []string{"birth-key", "tpm", "version"},
		},
		{
			name: "unknown command", args: []string{"frobnicate"}, wantCode: exitConfig,
			wantStderr: []string{`dpsagent: unknown command "frobnicate"`},
		},
		{
			name: "unknown flag", args: []string{"tpm", "info", "--bogus"}, wantCode: exitConfig,
			wantStderr: []string{"dpsagent: unknown flag: --bogus"},
		},
		{
			name: "a flag of another command", args: []string{"version", "--json"}, wantCode: exitConfig,
			wantStderr: []string{"unknown flag: --json"},
		},
		{
			name: "arguments to a command that takes none", args: []string{"version", "extra"}, wantCode: exitConfig,
			wantStderr: []string{`"extra"`},
		},
	} {
		t.Run(tc.name, tc.run)
	}
}

// swtpmInfo starts swtpm and reads what the library says about it, the oracle
// for what the command prints.
func swtpmInfo(t *testing.T) (spec string, info *tpm.Info) {
	t.Helper()
	sw := tpmtest.StartSwtpm(t)
	tp, err := tpm.Open(sw.Spec, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close() // swtpm serves one connection at a time
	info, err = tp.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Manufacturer == "" {
		t.Fatal("swtpm reports no manufacturer")
	}
	return sw.Spec, info
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

func TestTPMInfo(t *testing.T) {
	spec, info := swtpmInfo(t)
	closed := closedTCPSpec(t)
	for _, tc := range []cliCase{
		{
			name: "text", args: []string{"tpm", "info", "--tpm", spec}, wantCode: exitOK,
			check: func(t *testing.T, stdout, _ string) {
				for label, want := range map[string]string{
					"TPM":            spec,
					"Manufacturer":   info.Manufacturer,
					"Key algorithms": "ecdsa-p256, ecdsa-p384, rsa-2048",
					"auto picks":     "ecdsa-p384",
					// A fresh swtpm has nothing persisted.
					"Storage root key": "not persisted",
				} {
					if line := lineStarting(stdout, label+"  "); !strings.Contains(line, want) {
						t.Errorf("the %q line is %q, want it to contain %q\n%s", label, line, want, stdout)
					}
				}
			},
		},
		{
			name: "json", args: []string{"tpm", "info", "--tpm", spec, "--json"}, wantCode: exitOK,
			check: func(t *testing.T, stdout, _ string) {
				var got map[string]any
				if err := json.Unmarshal([]byte(stdout), &got); err != nil {
					t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
				}
				for k := range got {
					if !snakeCase.MatchString(k) {
						t.Errorf("JSON key %q is not snake_case", k)
					}
				}
				for _, k := range []string{"manufacturer", "key_algorithms", "auto_algorithm", "persistent_srk"} {
					if _, ok := got[k]; !ok {
						t.Errorf("JSON has no %q key: %s", k, stdout)
					}
				}
				if got["manufacturer"] != info.Manufacturer {
					t.Errorf("manufacturer = %v, want %q", got["manufacturer"], info.Manufacturer)
				}
				algs, _ := got["key_algorithms"].([]any)
				if !slices.Equal(algs, []any{"ecdsa-p256", "ecdsa-p384", "rsa-2048"}) {
					t.Errorf("key_algorithms = %v, want all three", got["key_algorithms"])
				}
				if got["auto_algorithm"] != "ecdsa-p384" {
					t.Errorf("auto_algorithm = %v, want ecdsa-p384", got["auto_algorithm"])
				}
				if got["persistent_srk"] != false {
					t.Errorf("persistent_srk = %v, want false on a fresh swtpm", got["persistent_srk"])
				}
			},
		},
		{
			name: "closed port", args: []string{"tpm", "info", "--tpm", closed}, wantCode: exitTPM,
			wantStderr: []string{"connect to the TPM at " + closed, "start swtpm", "iotemu tpm --listen"},
		},
		{
			name: "closed port, json", args: []string{"tpm", "info", "--tpm", closed, "--json"}, wantCode: exitTPM,
			wantStderr: []string{"connect to the TPM at " + closed},
			check: func(t *testing.T, stdout, _ string) {
				if stdout != "" {
					t.Errorf("a failed --json run printed to stdout, where scripts parse: %q", stdout)
				}
			},
		},
		{
			name: "no such device", args: []string{"tpm", "info", "--tpm", "/dev/does-not-exist-tpm"}, wantCode: exitTPM,
			wantStderr: []string{"enabled in the firmware"},
		},
		{
			name: "a TPM string that is not one is a usage error", args: []string{"tpm", "info", "--tpm", "swtpm"}, wantCode: exitConfig,
			wantStderr: []string{"unix:PATH or tcp:HOST:PORT"},
		},
	} {
		t.Run(tc.name, tc.run)
	}
}

// lineStarting returns the first line of s that starts with prefix.
func lineStarting(s, prefix string) string {
	for line := range strings.Lines(s) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}

func TestBirthKey(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	closed := closedTCPSpec(t)
	const regID = "gateway-007"
	type paths struct{ key, csr string }
	for _, tc := range []struct {
		name       string
		args       func(p paths) []string
		keyExists  bool // --key-out holds a file before the run
		wantCode   int
		wantStderr []string
		// wantAlg set means success: the blob and the CSR are checked.
		wantAlg   keys.Algorithm
		csrStdout bool
	}{
		{
			name: "auto, CSR to a file",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", sw.Spec, "--registration-id", regID, "--key-out", p.key, "--out", p.csr}
			},
			wantCode: exitOK, wantAlg: keys.ECDSAP384,
			wantStderr: []string{`its CSR for "gateway-007"`},
		},
		{
			name: "ecdsa-p256, CSR to stdout",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", sw.Spec, "--registration-id", regID, "--key-out", p.key, "--algorithm", "ecdsa-p256"}
			},
			wantCode: exitOK, wantAlg: keys.ECDSAP256, csrStdout: true,
		},
		{
			name: "rsa-2048 warns",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", sw.Spec, "--registration-id", regID, "--key-out", p.key, "--out", p.csr, "--algorithm", "RSA-2048"}
			},
			wantCode: exitOK, wantAlg: keys.RSA2048,
			wantStderr: []string{"creating an RSA key", "TLS 1.2"},
		},
		{
			// Checked before the TPM is opened: the port here is closed.
			name:      "refuses to overwrite --key-out",
			keyExists: true,
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", closed, "--registration-id", regID, "--key-out", p.key, "--out", p.csr}
			},
			wantCode:   exitConfig,
			wantStderr: []string{"already exists", "choose another --key-out"},
		},
		{
			name: "missing --registration-id",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", sw.Spec, "--key-out", p.key, "--out", p.csr}
			},
			wantCode:   exitConfig,
			wantStderr: []string{"--registration-id is required"},
		},
		{
			name: "bad --algorithm",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", sw.Spec, "--registration-id", regID, "--key-out", p.key, "--out", p.csr, "--algorithm", "ecdsa-p521"}
			},
			wantCode:   exitConfig,
			wantStderr: []string{"--algorithm", `unknown key algorithm "ecdsa-p521"`, "use one of auto, ecdsa-p256, ecdsa-p384, rsa-2048"},
		},
		{
			name: "TPM not reachable",
			args: func(p paths) []string {
				return []string{"birth-key", "--tpm", closed, "--registration-id", regID, "--key-out", p.key, "--out", p.csr}
			},
			wantCode:   exitTPM,
			wantStderr: []string{"connect to the TPM at " + closed},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := paths{key: filepath.Join(dir, "birth.tpm"), csr: filepath.Join(dir, "birth.csr")}
			precious := []byte("the key of an issued birth certificate\n")
			if tc.keyExists {
				if err := os.WriteFile(p.key, precious, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := tc.args(p)
			code, stdout, stderr := runCLI(t, args...)
			if code != tc.wantCode {
				t.Fatalf("dpsagent %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, tc.wantCode, stdout, stderr)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}

			if tc.wantAlg == "" {
				if got, _ := os.ReadFile(p.key); tc.keyExists && !bytes.Equal(got, precious) {
					t.Errorf("a refused run changed the existing --key-out")
				} else if _, err := os.Stat(p.key); !tc.keyExists && err == nil {
					t.Errorf("a failed run wrote the key blob %s", p.key)
				}
				if _, err := os.Stat(p.csr); err == nil {
					t.Errorf("a failed run wrote the CSR %s", p.csr)
				}
				return
			}
			csrPEM := []byte(stdout)
			if !tc.csrStdout {
				if stdout != "" {
					t.Errorf("with --out, stdout should be empty, got %q", stdout)
				}
				var err error
				if csrPEM, err = os.ReadFile(p.csr); err != nil {
					t.Fatal(err)
				}
			}
			checkBirthKey(t, sw.Spec, p.key, csrPEM, regID, tc.wantAlg)
		})
	}
}

// checkBirthKey checks what a manufacturer's CA and the device will rely on:
// the blob is private (0600), the CSR names the registration ID and verifies,
// and the blob loads in the TPM as the very key the CSR is for.
func checkBirthKey(t *testing.T, spec, keyPath string, csrPEM []byte, regID string, wantAlg keys.Algorithm) {
	t.Helper()
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key blob has mode %04o, want 0600", perm)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("the CSR is not one PEM CERTIFICATE REQUEST:\n%s", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	if csr.Subject.CommonName != regID {
		t.Errorf("CSR CN = %q, want the registration ID %q", csr.Subject.CommonName, regID)
	}
	if alg, err := keys.AlgorithmOf(csr.PublicKey); err != nil || alg != wantAlg {
		t.Errorf("CSR key is %s (%v), want %s", alg, err, wantAlg)
	}

	blob, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open(spec, tpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k, err := tp.LoadKey(blob)
	if err != nil {
		t.Fatalf("the written blob does not load: %v", err)
	}
	if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
		t.Fatal("the blob holds another key than the CSR's")
	}
	// Only the TPM's private half of that key can sign a CSR that verifies.
	der, err := keys.NewCSR(k, regID)
	if err != nil {
		t.Fatal(err)
	}
	again, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.CheckSignature(); err != nil {
		t.Errorf("the reloaded blob signs badly: %v", err)
	}
}
