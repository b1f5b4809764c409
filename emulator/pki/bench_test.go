package pki_test

import (
	"crypto/elliptic"
	"crypto/x509/pkix"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// The emulator must sustain well over 10,000 registrations a minute (167 a
// second) on two cores; these report the CA's share of that as issues/s.

func BenchmarkIssue(b *testing.B) {
	ca := openDeviceCA(b, b.TempDir(), &clock{testNow})
	csr := parsedCSR(b, ecKey(b, elliptic.P256()), "gw")
	for b.Loop() {
		if _, err := ca.Issue(csr, pki.IssueOptions{DeviceID: "gw"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
}

func BenchmarkIssueParallel(b *testing.B) {
	ca := openDeviceCA(b, b.TempDir(), &clock{testNow})
	csr := parsedCSR(b, ecKey(b, elliptic.P256()), "gw")
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.Issue(csr, pki.IssueOptions{DeviceID: "gw"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
}

// BenchmarkRegistration is the whole CA work of one DPS registration with a
// CSR: decode and check the CSR (a signature verification), then issue.
func BenchmarkRegistration(b *testing.B) {
	ca := openDeviceCA(b, b.TempDir(), &clock{testNow})
	der := csrDER(b, ecKey(b, elliptic.P384()), pkix.Name{CommonName: "gw"})
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			csr, err := pki.CheckCSR(der, "gw", pki.KeyPolicy{})
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := ca.Issue(csr, pki.IssueOptions{DeviceID: "gw"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}

func BenchmarkVerifyClient(b *testing.B) {
	ca := openDeviceCA(b, b.TempDir(), &clock{testNow})
	chain := issue(b, ca, pki.IssueOptions{DeviceID: "gw"})
	for b.Loop() {
		if _, err := ca.VerifyClient(chain, testNow); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}
