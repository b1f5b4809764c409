package pki_test

import (
	"crypto/elliptic"
	"crypto/x509/pkix"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

// FuzzCheckCSR feeds CheckCSR what a hostile device could send: it must
// never panic, and whatever it accepts must be a correctly self-signed CSR
// for exactly the registration ID asked for.
func FuzzCheckCSR(f *testing.F) {
	f.Add(csrDER(f, ecKey(f, elliptic.P256()), pkix.Name{CommonName: "gw"}), "gw")
	f.Add(csrDER(f, ecKey(f, elliptic.P384()), pkix.Name{CommonName: "gw", Organization: []string{"o"}}), "gw")
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00}, "")
	f.Fuzz(func(t *testing.T, der []byte, cn string) {
		csr, err := pki.CheckCSR(der, cn, pki.KeyPolicy{Allowed: []pki.KeyAlgorithm{pki.ECDSAP256, pki.ECDSAP384, pki.RSA2048}})
		if err != nil {
			return
		}
		if csr.Subject.CommonName != cn {
			t.Fatalf("accepted CN %q for %q", csr.Subject.CommonName, cn)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature fails: %v", err)
		}
	})
}
