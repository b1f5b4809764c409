package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestOpenDeviceCAKeepsTheSameRootAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	c := &clock{testNow}
	first := openDeviceCA(t, dir, c)
	before := issue(t, first, pki.IssueOptions{DeviceID: "gw-1"})

	second := openDeviceCA(t, dir, c)
	if !first.Root().Equal(second.Root()) || !first.Issuing().Equal(second.Issuing()) {
		t.Fatal("reopening created new CAs")
	}
	// A device provisioned before the restart still gets in after it.
	if _, err := second.VerifyClient(before, testNow); err != nil {
		t.Fatalf("certificate from before the restart refused: %v", err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, pki.DeviceRootFile))
	if err != nil {
		t.Fatal(err)
	}
	if block, _ := pem.Decode(rootPEM); block == nil || !bytes.Equal(block.Bytes, first.Root().Raw) {
		t.Fatalf("%s does not hold the root certificate", pki.DeviceRootFile)
	}
}

func TestDeviceCAsAreP384WithSHA384(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	for name, cert := range map[string]*x509.Certificate{"root": ca.Root(), "issuing": ca.Issuing()} {
		pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P384() {
			t.Errorf("%s key is %T, want ECDSA P-384", name, cert.PublicKey)
		}
		if cert.SignatureAlgorithm != x509.ECDSAWithSHA384 {
			t.Errorf("%s signed with %s, want ECDSA-SHA384", name, cert.SignatureAlgorithm)
		}
		if !cert.IsCA || len(cert.SubjectKeyId) == 0 {
			t.Errorf("%s: IsCA %v, SKI %x", name, cert.IsCA, cert.SubjectKeyId)
		}
	}
	if !ca.Issuing().MaxPathLenZero || ca.Issuing().MaxPathLen != 0 {
		t.Error("the issuing CA may sign sub-CAs")
	}
}

func TestDataDirectoryIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca := openDeviceCA(t, dir, &clock{testNow})
	if err := ca.Revoke("gw-1"); err != nil { // creates the revocations file
		t.Fatal(err)
	}
	if _, err := pki.OpenServerCA(dir, pki.Options{}); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("data directory mode %o, want 700", perm)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"device-issuing.key", "device-issuing.pem", "device-revocations.json", "device-root.key", "device-root.pem", "tls-ca.key", "tls-ca.pem"}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %o, want 600", e.Name(), perm)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("data directory holds %v, want exactly %v (no temporary files left)", got, want)
	}
}

func TestOpenDeviceCAAfterInterruptedFirstStart(t *testing.T) {
	dir := t.TempDir()
	// A crash during the first start left a key but no root certificate.
	if err := os.WriteFile(filepath.Join(dir, "device-issuing.key"), []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := openDeviceCA(t, dir, &clock{testNow})
	again := openDeviceCA(t, dir, &clock{testNow})
	if !ca.Root().Equal(again.Root()) {
		t.Fatal("the PKI created over the leftovers did not persist")
	}
}

func TestOpenDeviceCARefusesDamagedState(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string
	}{
		{"issuing key missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "device-issuing.key")); err != nil {
				t.Fatal(err)
			}
		}, "device-issuing.key"},
		{"issuing key replaced", func(t *testing.T, dir string) {
			other := t.TempDir()
			openDeviceCA(t, other, &clock{testNow})
			data, err := os.ReadFile(filepath.Join(other, "device-issuing.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "device-issuing.key"), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "does not belong"},
		{"root not PEM", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, pki.DeviceRootFile), []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "device-root.pem"},
		{"revocations corrupt", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "device-revocations.json"), []byte(`{"format_version":1,"devices":{`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "device-revocations.json"},
		{"revocations from a newer version", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "device-revocations.json"), []byte(`{"format_version":2,"devices":{}}`), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "format_version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			openDeviceCA(t, dir, &clock{testNow})
			tc.damage(t, dir)
			_, err := pki.OpenDeviceCA(dir, pki.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("OpenDeviceCA = %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}
