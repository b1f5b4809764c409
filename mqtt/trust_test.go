package mqtt

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The built-in roots are exactly Azure's current three, checked by their
// published SHA-256 fingerprints so a wrong or corrupted file cannot slip in.
func TestAzureRootsAreThePublishedOnes(t *testing.T) {
	want := map[string]string{
		"DigiCert Global Root G2":                       "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f",
		"Microsoft RSA Root Certificate Authority 2017": "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0",
		"Microsoft ECC Root Certificate Authority 2017": "358df39d764af9e1b766e9c972df352ee15cfac227af6ad1d70e8e4a6edcba02",
	}
	roots, err := AzureRoots()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range roots {
		sum := sha256.Sum256(c.Raw)
		got[c.Subject.CommonName] = hex.EncodeToString(sum[:])
		if !c.IsCA {
			t.Errorf("%s is not a CA certificate", c.Subject.CommonName)
		}
	}
	if len(got) != len(want) || len(roots) != len(want) {
		t.Fatalf("built-in roots = %v, want the three of %v", got, want)
	}
	for cn, fp := range want {
		if got[cn] != fp {
			t.Errorf("%s: fingerprint %q, want %q", cn, got[cn], fp)
		}
	}
}

func noSystemPool() (*x509.CertPool, error) { return nil, errors.New("no system roots here") }

// A device without ca-certificates still trusts Azure, and a bundle adds to
// that instead of replacing it.
func TestRootsWithoutSystemPool(t *testing.T) {
	ca := newTestCA(t, "emulator CA")
	pool, err := TrustConfig{BundleFile: ca.pemFile(t)}.roots(noSystemPool)
	if err != nil {
		t.Fatal(err)
	}
	azure, _ := AzureRoots()
	for _, root := range append(azure, ca.cert) {
		if _, err := root.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Errorf("%s is not trusted: %v", root.Subject.CommonName, err)
		}
	}
	// Without the bundle the test CA is not trusted.
	pool, err = TrustConfig{}.roots(noSystemPool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.cert.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Error("a CA outside the bundle is trusted")
	}
}

func TestRootsKeepsSystemPool(t *testing.T) {
	ca := newTestCA(t, "pretend OS root")
	system := x509.NewCertPool()
	system.AddCert(ca.cert)
	pool, err := TrustConfig{}.roots(func() (*x509.CertPool, error) { return system, nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("an OS root is not trusted: %v", err)
	}
}

func TestRootsReal(t *testing.T) {
	if _, err := (TrustConfig{}).Roots(); err != nil {
		t.Fatal(err)
	}
}

func TestTrustBundleErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "absent.pem"), "read trust bundle"},
		{"empty", write("empty.pem", ""), "holds no certificate"},
		{"key only", write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "holds no certificate"},
		{"not PEM", write("der.pem", "\x30\x82\x01\x00garbage"), "holds no certificate"},
		{"bad certificate", write("bad.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := TrustConfig{BundleFile: tt.path}.Roots()
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q should name %s and say %q", err, tt.path, tt.want)
			}
		})
	}
}

// Non-certificate blocks in a bundle (a key pasted by mistake, say) are
// skipped rather than making every certificate in it unusable.
func TestTrustBundleSkipsOtherBlocks(t *testing.T) {
	ca := newTestCA(t, "CA")
	data, err := os.ReadFile(ca.pemFile(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mixed.pem")
	mixed := "comment line\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(data)
	if err := os.WriteFile(path, []byte(mixed), 0o600); err != nil {
		t.Fatal(err)
	}
	certs, err := readBundle(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || !slices.Equal(certs[0].Raw, ca.cert.Raw) {
		t.Errorf("got %d certificates, want the CA", len(certs))
	}
}
