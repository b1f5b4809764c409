package pki_test

import (
	"bytes"
	"crypto/elliptic"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// TestOpenSSLVerifiesIssuedChain has an independent implementation check
// what the emulator issues, as devices using OpenSSL will.
func TestOpenSSLVerifiesIssuedChain(t *testing.T) {
	openssl := opensslPath(t)
	dir := t.TempDir()
	// openssl checks dates against the real clock.
	ca, err := pki.OpenDeviceCA(filepath.Join(dir, "data"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ders, err := ca.Issue(parsedCSR(t, ecKey(t, elliptic.P384()), "gateway-001"), pki.IssueOptions{DeviceID: "gateway-001", Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leaf := writeCert(t, dir, "leaf.pem", ders[0])
	issuing := writeCert(t, dir, "issuing.pem", ders[1])
	root := filepath.Join(dir, "data", pki.DeviceRootFile) // the file operators hand out

	out, err := exec.Command(openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", issuing, leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "leaf.pem: OK") {
		t.Fatalf("openssl verify refused the chain: %v\n%s", err, out)
	}
	// And openssl really does check: without the issuing CA there is no path.
	if out, err := exec.Command(openssl, "verify", "-CAfile", root, leaf).CombinedOutput(); err == nil {
		t.Fatalf("openssl verify accepted a leaf without its issuing CA:\n%s", out)
	}
	// The generation that revocation relies on is visible to operators.
	out, err = exec.Command(openssl, "x509", "-in", leaf, "-noout", "-subject", "-nameopt", "RFC2253").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CN=gateway-001,OU=iotemu-generation-0") {
		t.Errorf("openssl x509 -subject: %v\n%s", err, out)
	}
}

func TestOpenSSLVerifiesServerCertificate(t *testing.T) {
	openssl := opensslPath(t)
	dir := t.TempDir()
	s, err := pki.OpenServerCA(filepath.Join(dir, "data"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.ServerCertificate([]string{"hub.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := writeCert(t, dir, "server.pem", cert.Certificate[0])
	ca := filepath.Join(dir, "data", pki.ServerCAFile)
	for _, check := range [][]string{{"-verify_hostname", "hub.example.test"}, {"-verify_hostname", "localhost"}, {"-verify_ip", "::1"}} {
		args := append([]string{"verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", ca}, check...)
		out, err := exec.Command(openssl, append(args, leaf)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "server.pem: OK") {
			t.Errorf("openssl verify %v: %v\n%s", check, err, out)
		}
	}
}

func opensslPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("openssl is required in CI: %v", err)
		}
		t.Skipf("openssl not installed: %v", err)
	}
	return path
}

func writeCert(t *testing.T, dir, name string, der []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
