package pki_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestCheckCSR(t *testing.T) {
	const regID = "gateway-001"
	cn := pkix.Name{CommonName: regID}
	p256, p384 := ecKey(t, elliptic.P256()), ecKey(t, elliptic.P384())
	withRSA := pki.KeyPolicy{Allowed: []pki.KeyAlgorithm{pki.ECDSAP256, pki.ECDSAP384, pki.RSA2048}}
	onlyP384 := pki.KeyPolicy{Allowed: []pki.KeyAlgorithm{pki.ECDSAP384}}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	oidCN := asn1.ObjectIdentifier{2, 5, 4, 3}

	good := csrDER(t, p256, cn)
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0x01 // the last byte of the signature's S value

	oversize := func() []byte {
		tmpl := &x509.CertificateRequest{
			Subject:         cn,
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: make([]byte, pki.MaxCSRSize)}},
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, p256)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}

	for _, tc := range []struct {
		name   string
		der    []byte
		policy pki.KeyPolicy
		want   error // nil: accepted
	}{
		{"ecdsa-p256", good, pki.KeyPolicy{}, nil},
		{"ecdsa-p384", csrDER(t, p384, cn), pki.KeyPolicy{}, nil},
		{"rsa-2048 refused by default", csrDER(t, rsaKey(t, 2048), cn), pki.KeyPolicy{}, pki.ErrCSRKey},
		{"rsa-2048 when allowed", csrDER(t, rsaKey(t, 2048), cn), withRSA, nil},
		{"rsa-1024 even when RSA is allowed", csrDER(t, rsaKey(t, 1024), cn), withRSA, pki.ErrCSRKey},
		{"ecdsa-p521", csrDER(t, ecKey(t, elliptic.P521()), cn), withRSA, pki.ErrCSRKey},
		{"ed25519", csrDER(t, edKey, cn), withRSA, pki.ErrCSRKey},
		{"p256 when only p384 allowed", good, onlyP384, pki.ErrCSRKey},
		{"not DER", []byte("-----BEGIN CERTIFICATE REQUEST-----"), pki.KeyPolicy{}, pki.ErrCSRDecode},
		{"empty", nil, pki.KeyPolicy{}, pki.ErrCSRDecode},
		{"truncated", good[:len(good)/2], pki.KeyPolicy{}, pki.ErrCSRDecode},
		{"trailing bytes", append(bytes.Clone(good), 0), pki.KeyPolicy{}, pki.ErrCSRDecode},
		{"bad signature", badSig, pki.KeyPolicy{}, pki.ErrCSRSignature},
		{"other CN", csrDER(t, p256, pkix.Name{CommonName: "gateway-002"}), pki.KeyPolicy{}, pki.ErrCSRSubject},
		{"CN in other case", csrDER(t, p256, pkix.Name{CommonName: "Gateway-001"}), pki.KeyPolicy{}, pki.ErrCSRSubject},
		{"no CN", csrDER(t, p256, pkix.Name{Organization: []string{"x"}}), pki.KeyPolicy{}, pki.ErrCSRSubject},
		{"two CNs", csrDER(t, p256, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: oidCN, Value: regID}, {Type: oidCN, Value: regID},
		}}), pki.KeyPolicy{}, pki.ErrCSRSubject},
		{"extra subject attributes are fine", csrDER(t, p256, pkix.Name{CommonName: regID, Organization: []string{"Contoso"}}), pki.KeyPolicy{}, nil},
		{"over 8 KB", oversize(), pki.KeyPolicy{}, pki.ErrCSRTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := pki.CheckCSR(tc.der, regID, tc.policy)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused a good CSR: %v", err)
				}
				if csr.Subject.CommonName != regID {
					t.Fatalf("returned CSR has CN %q", csr.Subject.CommonName)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("CheckCSR error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeCSRField(t *testing.T) {
	der := csrDER(t, ecKey(t, elliptic.P256()), pkix.Name{CommonName: "gw"})
	for _, tc := range []struct {
		name  string
		field string
		want  error
	}{
		{"base64 DER", base64.StdEncoding.EncodeToString(der), nil},
		{"PEM", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), pki.ErrCSRDecode},
		{"url-safe base64", base64.URLEncoding.EncodeToString(append(der, 0xfb, 0xff)), pki.ErrCSRDecode},
		{"over 8 KB", base64.StdEncoding.EncodeToString(make([]byte, 6200)), pki.ErrCSRTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pki.DecodeCSRField(tc.field)
			if tc.want == nil {
				if err != nil || !bytes.Equal(got, der) {
					t.Fatalf("DecodeCSRField = %x, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeCSRField error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyPolicyValidate(t *testing.T) {
	if err := (pki.KeyPolicy{}).Validate(); err != nil {
		t.Errorf("default policy: %v", err)
	}
	if err := (pki.KeyPolicy{Allowed: []pki.KeyAlgorithm{"rsa-4096"}}).Validate(); err == nil {
		t.Error("accepted a policy naming rsa-4096")
	}
	for _, name := range []string{"ecdsa-p256", "ecdsa-p384", "rsa-2048"} {
		if alg, err := pki.ParseKeyAlgorithm(name); err != nil || string(alg) != name {
			t.Errorf("ParseKeyAlgorithm(%q) = %q, %v", name, alg, err)
		}
	}
	if _, err := pki.ParseKeyAlgorithm("ECDSA-P256"); err == nil {
		t.Error("key algorithm names are lower case, as in the configuration")
	}
}
