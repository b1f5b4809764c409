package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"time"
)

// Options carries the collaborators of a CA. The zero value is ready to use.
type Options struct {
	// Now is the clock for issuing; nil means time.Now. Tests and fault
	// injection pass their own. Verification takes its time as an argument.
	Now func() time.Time
}

func (o Options) clock() func() time.Time {
	if o.Now == nil {
		return time.Now
	}
	return o.Now
}

// caBackdate is how far before its creation a CA certificate is valid from,
// so a device whose clock runs a little slow still accepts it.
const caBackdate = time.Hour

// authority is a CA certificate and its private key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// authorityFiles names the two files an authority is kept in.
type authorityFiles struct{ cert, key string }

func newSelfSignedCA(subject pkix.Name, curve elliptic.Curve, now time.Time, lifetime time.Duration) (*authority, error) {
	return newCA(nil, subject, curve, now, lifetime)
}

// newCA makes a CA under parent (self-signed when parent is nil). Only the
// root may have a sub-CA; the issuing CA signs leaves only.
func newCA(parent *authority, subject pkix.Name, curve elliptic.Curve, now time.Time, lifetime time.Duration) (*authority, error) {
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: generate key: %w", subject.CommonName, err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", subject.CommonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               subject,
		NotBefore:             now.Add(-caBackdate).Truncate(time.Second),
		NotAfter:              now.Add(lifetime).Truncate(time.Second),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski,
	}
	issuerCert, issuerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		issuerCert, issuerKey = parent.cert, parent.key
		tmpl.MaxPathLenZero = true
		if tmpl.NotAfter.After(parent.cert.NotAfter) {
			tmpl.NotAfter = parent.cert.NotAfter
		}
	} else {
		tmpl.MaxPathLen = 1
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: sign certificate: %w", subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: parse the new certificate: %w", subject.CommonName, err)
	}
	return &authority{cert: cert, key: key}, nil
}

// save writes the key before the certificate: the certificate is the commit
// point, so a crash in between leaves a key without certificate, which
// loading treats as "never created" and overwrites.
func (a *authority) save(dir string, files authorityFiles) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(a.key)
	if err != nil {
		return fmt.Errorf("save %s: encode key: %w", files.key, err)
	}
	if err := writePEM(dir, files.key, "PRIVATE KEY", keyDER); err != nil {
		return err
	}
	return writePEM(dir, files.cert, "CERTIFICATE", a.cert.Raw)
}

func loadAuthority(dir string, files authorityFiles) (*authority, error) {
	certDER, err := readPEM(dir, files.cert, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", filepath.Join(dir, files.cert), err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", filepath.Join(dir, files.cert), err)
	}
	keyDER, err := readPEM(dir, files.key, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", filepath.Join(dir, files.key), err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", filepath.Join(dir, files.key), err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load CA key %s: %T is not an ECDSA key", filepath.Join(dir, files.key), parsed)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA %s: the key in %s does not belong to this certificate; restore the matching pair or remove both to start a new CA",
			filepath.Join(dir, files.cert), files.key)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA %s: not a CA certificate", filepath.Join(dir, files.cert))
	}
	return &authority{cert: cert, key: key}, nil
}

// subjectKeyID follows RFC 7093 section 2 method 1: the leftmost 160 bits of
// the SHA-256 of the subjectPublicKey bits. Go derives one only for CAs (with
// SHA-1); setting it everywhere gives every certificate an SKI and every
// child an AKI.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	var parsed struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(spki, &parsed); err != nil || len(rest) != 0 {
		return nil, errors.Join(errors.New("subject key identifier: re-parse public key"), err)
	}
	sum := sha256.Sum256(parsed.PublicKey.Bytes)
	return sum[:20], nil
}

// randomSerial returns a positive random 128-bit serial number, comfortably
// above the 64 bits of entropy the CA/Browser Forum asks for and within the
// 20 octets RFC 5280 allows.
func randomSerial() *big.Int {
	var b [16]byte
	for {
		rand.Read(b[:]) // never fails since Go 1.24
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n
		}
	}
}
