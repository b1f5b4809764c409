package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// Leaf lifetimes. Azure's policies allow 7 to 90 days and state no
// default; the emulator also allows seconds, for demonstrations and tests.
const (
	DefaultLifetime = 30 * 24 * time.Hour
	MinLifetime     = time.Second
)

// maxBackdate is how far before the moment of issue a leaf becomes valid, so
// a device whose clock is a little behind the emulator's can use it at once.
const maxBackdate = time.Minute

// IssueOptions says what to put in a device certificate.
type IssueOptions struct {
	// DeviceID becomes the subject CN, and names the device for revocation
	// and for VerifyClient. Required.
	DeviceID string
	// Lifetime is NotAfter minus NotBefore, in whole seconds (a fraction is
	// dropped); zero means DefaultLifetime, below MinLifetime is an error.
	Lifetime time.Duration
	// NotBefore, when set, replaces the backdated moment of issue: fault
	// injection uses it for certificates not yet valid or already expired.
	NotBefore time.Time
}

// Issue signs a device certificate for the public key of csr, which the
// caller has checked with CheckCSR. The CSR's subject is not copied: the
// subject is CN=DeviceID plus the device's revocation generation. It returns
// the chain as devices receive it: leaf, issuing CA, root, each DER.
func (ca *DeviceCA) Issue(csr *x509.CertificateRequest, opts IssueOptions) ([][]byte, error) {
	if csr == nil {
		return nil, errors.New("issue device certificate: no CSR")
	}
	if opts.DeviceID == "" {
		return nil, errors.New("issue device certificate: no device ID")
	}
	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	lifetime = lifetime.Truncate(time.Second)
	if lifetime < MinLifetime {
		return nil, fmt.Errorf("issue device certificate for %q: lifetime %s is below the minimum %s", opts.DeviceID, opts.Lifetime, MinLifetime)
	}
	notBefore, notAfter := leafValidity(ca.now(), lifetime, opts.NotBefore)
	if notAfter.After(ca.issuing.cert.NotAfter) {
		return nil, fmt.Errorf("issue device certificate for %q: it would be valid until %s, after the issuing CA expires (%s); shorten the lifetime",
			opts.DeviceID, notAfter.UTC().Format(time.RFC3339), ca.issuing.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	ski, err := subjectKeyID(csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue device certificate for %q: %w", opts.DeviceID, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject: pkix.Name{
			CommonName:         opts.DeviceID,
			OrganizationalUnit: []string{generationOU(ca.generation(opts.DeviceID))},
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
	}
	// Signing happens outside any lock: the issuing CA never changes after
	// opening, and only the generation lookup above touches shared state.
	leaf, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuing.cert, csr.PublicKey, ca.issuing.key)
	if err != nil {
		return nil, fmt.Errorf("issue device certificate for %q: %w", opts.DeviceID, err)
	}
	return [][]byte{leaf, bytes.Clone(ca.issuing.cert.Raw), bytes.Clone(ca.root.cert.Raw)}, nil
}

// leafValidity is the validity window of a leaf issued at now. Unless
// notBefore overrides it, the window starts backdate(lifetime) before now;
// either way it lasts exactly lifetime, so the device's renewal maths (which
// reads NotBefore and NotAfter) sees the lifetime that was configured.
// Times are truncated to whole seconds, the precision of X.509.
func leafValidity(now time.Time, lifetime time.Duration, notBefore time.Time) (time.Time, time.Time) {
	if notBefore.IsZero() {
		notBefore = now.Add(-backdate(lifetime))
	}
	notBefore = notBefore.Truncate(time.Second)
	return notBefore, notBefore.Add(lifetime)
}

// backdate is how much of a leaf's lifetime lies before its moment of issue:
// a minute, but never more than a tenth of the lifetime, so a 20-second
// certificate is backdated 2 seconds and still has 18 left when it arrives,
// instead of being born expired.
func backdate(lifetime time.Duration) time.Duration {
	return min(maxBackdate, lifetime/10).Truncate(time.Second)
}
