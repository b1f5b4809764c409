package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxCSRSize is the largest CSR accepted, in bytes: the hub credential API
// refuses a csr field over 8 KB, and DPS has no tighter rule.
const MaxCSRSize = 8 << 10

// Why a CSR was refused, for errors.Is; DPS and the hub map each to their
// documented error code. Every error from DecodeCSRField and CheckCSR wraps
// exactly one.
var (
	ErrCSRTooLarge  = errors.New("CSR too large")
	ErrCSRDecode    = errors.New("CSR cannot be decoded")
	ErrCSRSignature = errors.New("CSR signature does not verify")
	ErrCSRSubject   = errors.New("CSR subject does not match the registration")
	ErrCSRKey       = errors.New("CSR key type not allowed")
)

// KeyAlgorithm names a CSR key type, as the configuration spells it.
type KeyAlgorithm string

// The key types a KeyPolicy can allow.
const (
	ECDSAP256 KeyAlgorithm = "ecdsa-p256"
	ECDSAP384 KeyAlgorithm = "ecdsa-p384"
	RSA2048   KeyAlgorithm = "rsa-2048"
)

// ParseKeyAlgorithm validates a configured key type name.
func ParseKeyAlgorithm(name string) (KeyAlgorithm, error) {
	switch alg := KeyAlgorithm(name); alg {
	case ECDSAP256, ECDSAP384, RSA2048:
		return alg, nil
	}
	return "", fmt.Errorf("key algorithm %q: want one of %s, %s, %s", name, ECDSAP256, ECDSAP384, RSA2048)
}

// KeyPolicy is the set of CSR key types the emulated PKI signs. The zero
// value is the default: EC P-256 and P-384. Microsoft documents P-384 only,
// but its own SDKs and end-to-end tests use P-256 against the service, so
// both are accepted; RSA is documented as refused and is opt-in here.
type KeyPolicy struct {
	Allowed []KeyAlgorithm
}

func (p KeyPolicy) allowed() []KeyAlgorithm {
	if len(p.Allowed) == 0 {
		return []KeyAlgorithm{ECDSAP256, ECDSAP384}
	}
	return p.Allowed
}

// Validate reports a policy naming an unknown key type, which would
// otherwise refuse every CSR of that type in silence.
func (p KeyPolicy) Validate() error {
	for _, alg := range p.Allowed {
		if _, err := ParseKeyAlgorithm(string(alg)); err != nil {
			return fmt.Errorf("key policy: %w", err)
		}
	}
	return nil
}

// DecodeCSRField decodes the csr field of a DPS or hub request: base64 of
// the DER, with no PEM armour. The size limit applies to the field as sent.
func DecodeCSRField(field string) ([]byte, error) {
	if len(field) > MaxCSRSize {
		return nil, fmt.Errorf("decode CSR: %w: %d bytes, the limit is %d", ErrCSRTooLarge, len(field), MaxCSRSize)
	}
	der, err := base64.StdEncoding.DecodeString(field)
	if err != nil {
		return nil, fmt.Errorf("decode CSR: %w: not base64 (send the DER, base64-encoded, without PEM header): %w", ErrCSRDecode, err)
	}
	return der, nil
}

// CheckCSR parses a PKCS#10 CSR and applies the service's rules: at most
// MaxCSRSize bytes, a key type policy allows, a valid self-signature, and a
// subject whose only CN is exactly wantCN (the registration ID). The key
// type is checked before the signature so that a key Go cannot verify is
// reported as not allowed rather than as a bad signature.
func CheckCSR(der []byte, wantCN string, policy KeyPolicy) (*x509.CertificateRequest, error) {
	if len(der) > MaxCSRSize {
		return nil, fmt.Errorf("check CSR: %w: %d bytes, the limit is %d", ErrCSRTooLarge, len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("check CSR: %w: %w", ErrCSRDecode, err)
	}
	alg, desc := keyAlgorithm(csr.PublicKey)
	if allowed := policy.allowed(); alg == "" || !slices.Contains(allowed, alg) {
		return nil, fmt.Errorf("check CSR: %w: %s; allowed: %s", ErrCSRKey, desc, joinAlgorithms(allowed))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("check CSR: %w: %w", ErrCSRSignature, err)
	}
	if err := checkSubject(csr, wantCN); err != nil {
		return nil, fmt.Errorf("check CSR: %w: %w", ErrCSRSubject, err)
	}
	return csr, nil
}

// checkSubject wants exactly one CN, equal to wantCN byte for byte: Go's
// Subject.CommonName would silently pick one of several.
func checkSubject(csr *x509.CertificateRequest, wantCN string) error {
	oidCommonName := asn1.ObjectIdentifier{2, 5, 4, 3}
	var cns []string
	for _, attr := range csr.Subject.Names {
		if attr.Type.Equal(oidCommonName) {
			s, _ := attr.Value.(string)
			cns = append(cns, s)
		}
	}
	switch {
	case len(cns) == 0:
		return fmt.Errorf("no CN, want CN=%q", wantCN)
	case len(cns) > 1:
		return fmt.Errorf("%d CNs, want exactly CN=%q", len(cns), wantCN)
	case cns[0] != wantCN:
		return fmt.Errorf("CN=%q, want CN=%q (the registration ID, exactly)", cns[0], wantCN)
	}
	return nil
}

// keyAlgorithm classifies a public key; desc describes keys that are none
// of the named types, for the error message.
func keyAlgorithm(pub crypto.PublicKey) (alg KeyAlgorithm, desc string) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256, string(ECDSAP256)
		case elliptic.P384():
			return ECDSAP384, string(ECDSAP384)
		}
		return "", "ECDSA on " + k.Curve.Params().Name
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return RSA2048, string(RSA2048)
		}
		return "", fmt.Sprintf("RSA %d bits", k.N.BitLen())
	case nil:
		return "", "an unsupported public key algorithm"
	default:
		return "", fmt.Sprintf("%T", pub)
	}
}

func joinAlgorithms(algs []KeyAlgorithm) string {
	names := make([]string, len(algs))
	for i, a := range algs {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}
