package pki_test

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestVerifyClientRefuses(t *testing.T) {
	c := &clock{testNow}
	ca := openDeviceCA(t, t.TempDir(), c)
	other := openDeviceCA(t, t.TempDir(), c)
	good := issue(t, ca, pki.IssueOptions{DeviceID: "gw-1", Lifetime: time.Hour})
	server, err := pki.OpenServerCA(t.TempDir(), pki.Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := server.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		now   time.Time
		want  error
	}{
		{"no certificate", nil, testNow, pki.ErrCertUntrusted},
		{"leaf without the issuing CA", good[:1], testNow, pki.ErrCertUntrusted},
		{"leaf and issuing CA", good[:2], testNow, nil},
		{"issued by another emulator", issue(t, other, pki.IssueOptions{DeviceID: "gw-1"}), testNow, pki.ErrCertUntrusted},
		{"expired", good, testNow.Add(2 * time.Hour), pki.ErrCertExpired},
		{"not yet valid", issue(t, ca, pki.IssueOptions{DeviceID: "gw-1", NotBefore: testNow.Add(time.Hour)}), testNow, pki.ErrCertNotYetValid},
		{"born expired by fault injection", issue(t, ca, pki.IssueOptions{DeviceID: "gw-1", NotBefore: testNow.Add(-2 * time.Hour), Lifetime: time.Hour}), testNow, pki.ErrCertExpired},
		{"server certificate", []*x509.Certificate{serverCert.Leaf, server.Certificate()}, testNow, pki.ErrCertUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ca.VerifyClient(tc.chain, tc.now)
			if tc.want == nil {
				if err != nil || id != "gw-1" {
					t.Fatalf("VerifyClient = %q, %v", id, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyClient error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestConcurrentIssueRevokeVerify(t *testing.T) {
	ca := openDeviceCA(t, t.TempDir(), &clock{testNow})
	csr := parsedCSR(t, ecKey(t, elliptic.P256()), "gw")
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			id := []string{"a", "b"}[i%2]
			for range 5 {
				ders, err := ca.Issue(csr, pki.IssueOptions{DeviceID: id})
				if err != nil {
					t.Error(err)
					return
				}
				chain := make([]*x509.Certificate, len(ders))
				for j, der := range ders {
					if chain[j], err = x509.ParseCertificate(der); err != nil {
						t.Error(err)
						return
					}
				}
				// Racing a revocation may refuse it as revoked, nothing else.
				if _, err := ca.VerifyClient(chain, testNow); err != nil && !errors.Is(err, pki.ErrCertRevoked) {
					t.Error(err)
				}
				if err := ca.Revoke(id); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}
