package keys

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
)

var (
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtKeyUsageCAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// NewCSR builds a PKCS#10 request for key with the subject CN that DPS requires
// (the registration ID) and an extended key usage of clientAuth, signed with the
// hash that suits the algorithm. It returns the DER bytes.
func NewCSR(key Key, commonName string) ([]byte, error) {
	if commonName == "" {
		return nil, fmt.Errorf("build CSR: the subject common name (registration ID) is empty")
	}
	sigAlg, err := signatureAlgorithm(key.Algorithm())
	if err != nil {
		return nil, fmt.Errorf("build CSR for %q: %w", commonName, err)
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidExtKeyUsageCAuth})
	if err != nil {
		return nil, fmt.Errorf("build CSR for %q: encode extended key usage: %w", commonName, err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:            pkix.Name{CommonName: commonName},
		SignatureAlgorithm: sigAlg,
		ExtraExtensions:    []pkix.Extension{{Id: oidExtKeyUsage, Value: eku}},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, crypto.Signer(key))
	if err != nil {
		return nil, fmt.Errorf("build CSR for %q with a %s key: %w", commonName, key.Algorithm(), err)
	}
	return der, nil
}

// CSRBase64 is the form DPS and the IoT Hub credential API take: standard base64
// of the DER bytes, without PEM armour or line breaks.
func CSRBase64(der []byte) string { return base64.StdEncoding.EncodeToString(der) }

// CSRPEM is the form people and manufacturers' CAs expect in files.
func CSRPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func signatureAlgorithm(alg Algorithm) (x509.SignatureAlgorithm, error) {
	switch alg {
	case ECDSAP256:
		return x509.ECDSAWithSHA256, nil
	case ECDSAP384:
		return x509.ECDSAWithSHA384, nil
	case RSA2048:
		// PKCS#1 v1.5: TPMs sign RSA-PSS with a salt length that verifiers often reject.
		return x509.SHA256WithRSA, nil
	}
	return 0, fmt.Errorf("no signature algorithm for key algorithm %q", alg)
}
