package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// testNow is the fake clock's start; tests that hand certificates to
// openssl use the real clock instead, since openssl checks dates against it.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable fake clock for Options.Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func openDeviceCA(t testing.TB, dir string, c *clock) *pki.DeviceCA {
	t.Helper()
	ca, err := pki.OpenDeviceCA(dir, pki.Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func ecKey(t testing.TB, curve elliptic.Curve) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func rsaKey(t testing.TB, bits int) crypto.Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func csrDER(t testing.TB, key crypto.Signer, subject pkix.Name) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func parsedCSR(t testing.TB, key crypto.Signer, cn string) *x509.CertificateRequest {
	t.Helper()
	csr, err := pki.CheckCSR(csrDER(t, key, pkix.Name{CommonName: cn}), cn, pki.KeyPolicy{Allowed: []pki.KeyAlgorithm{pki.ECDSAP256, pki.ECDSAP384, pki.RSA2048}})
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// issue issues a certificate for a fresh P-256 key and returns it parsed,
// leaf first.
func issue(t testing.TB, ca *pki.DeviceCA, opts pki.IssueOptions) []*x509.Certificate {
	t.Helper()
	ders, err := ca.Issue(parsedCSR(t, ecKey(t, elliptic.P256()), opts.DeviceID), opts)
	if err != nil {
		t.Fatal(err)
	}
	return parseChain(t, ders)
}

func parseChain(t testing.TB, ders [][]byte) []*x509.Certificate {
	t.Helper()
	chain := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("certificate %d of the chain: %v", i, err)
		}
		chain[i] = c
	}
	return chain
}
