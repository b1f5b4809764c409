package pki_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestRevokeInvalidatesEarlierCertificatesOnly(t *testing.T) {
	dir := t.TempDir()
	ca := openDeviceCA(t, dir, &clock{testNow})
	old := issue(t, ca, pki.IssueOptions{DeviceID: "gw-1"})
	bystander := issue(t, ca, pki.IssueOptions{DeviceID: "gw-2"})
	if id, err := ca.VerifyClient(old, testNow); err != nil || id != "gw-1" {
		t.Fatalf("before revocation: %q, %v", id, err)
	}

	if err := ca.Revoke("gw-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.VerifyClient(old, testNow); !errors.Is(err, pki.ErrCertRevoked) {
		t.Fatalf("revoked certificate: %v, want ErrCertRevoked", err)
	}
	renewed := issue(t, ca, pki.IssueOptions{DeviceID: "gw-1"})
	if _, err := ca.VerifyClient(renewed, testNow); err != nil {
		t.Fatalf("certificate issued after revocation refused: %v", err)
	}
	if _, err := ca.VerifyClient(bystander, testNow); err != nil {
		t.Fatalf("revoking gw-1 broke gw-2: %v", err)
	}

	// Revocation survives a restart.
	reopened := openDeviceCA(t, dir, &clock{testNow})
	if _, err := reopened.VerifyClient(old, testNow); !errors.Is(err, pki.ErrCertRevoked) {
		t.Fatalf("after reopen, revoked certificate: %v, want ErrCertRevoked", err)
	}
	if _, err := reopened.VerifyClient(renewed, testNow); err != nil {
		t.Fatalf("after reopen, renewed certificate refused: %v", err)
	}

	// A second revocation invalidates the renewed certificate too.
	if err := reopened.Revoke("gw-1"); err != nil {
		t.Fatal(err)
	}
	for name, chain := range map[string][]*x509.Certificate{"first": old, "renewed": renewed} {
		if _, err := reopened.VerifyClient(chain, testNow); !errors.Is(err, pki.ErrCertRevoked) {
			t.Errorf("%s certificate after second revocation: %v, want ErrCertRevoked", name, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "device-revocations.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"generation": 2`) || !strings.Contains(string(data), `"revoked_at": "2026-06-01T12:00:00Z"`) {
		t.Errorf("revocations file:\n%s", data)
	}
}

func TestRevokeFailureLeavesStateUnchanged(t *testing.T) {
	dir := t.TempDir()
	ca := openDeviceCA(t, dir, &clock{testNow})
	chain := issue(t, ca, pki.IssueOptions{DeviceID: "gw-1"})
	// A non-empty directory where the file goes makes the final rename fail,
	// even for root, which ignores read-only modes.
	if err := os.MkdirAll(filepath.Join(dir, "device-revocations.json", "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke("gw-1"); err == nil {
		t.Fatal("Revoke reported success without writing the revocation")
	}
	if _, err := ca.VerifyClient(chain, testNow); err != nil {
		t.Fatalf("a failed revocation still took effect in memory: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
