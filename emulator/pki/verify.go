package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Why VerifyClient refused a chain, for errors.Is; the hub maps each to its
// 401 answer.
var (
	ErrCertUntrusted   = errors.New("certificate not issued by the device PKI")
	ErrCertExpired     = errors.New("certificate expired")
	ErrCertNotYetValid = errors.New("certificate not yet valid")
	ErrCertUsage       = errors.New("certificate not for client authentication")
	ErrCertRevoked     = errors.New("certificate revoked")
)

// VerifyClient checks the chain a device presented to the hub, leaf first,
// and returns the device ID it authenticates (the leaf's CN). The chain must
// lead from the leaf to the device root through certificates the device
// sent (Azure asks devices to send the issuing CA; sending the root too is
// harmless), be valid at now, allow client authentication, and carry the
// device's current revocation generation.
func (ca *DeviceCA) VerifyClient(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 || chain[0] == nil {
		return "", fmt.Errorf("verify client certificate: %w: no certificate presented", ErrCertUntrusted)
	}
	leaf := chain[0]
	deviceID := leaf.Subject.CommonName
	// The leaf's dates are checked first, so an expired device hears
	// "expired" and not a generic chain failure.
	if now.Before(leaf.NotBefore) {
		return "", fmt.Errorf("verify client certificate of %q: %w until %s", deviceID, ErrCertNotYetValid, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return "", fmt.Errorf("verify client certificate of %q: %w at %s", deviceID, ErrCertExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	// A leaf without any EKU would pass x509's usage check; ours always
	// name clientAuth, and the hub wants it named.
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "", fmt.Errorf("verify client certificate of %q: %w", deviceID, ErrCertUsage)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		if c != nil {
			intermediates.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         ca.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", fmt.Errorf("verify client certificate of %q: %w: %w", deviceID, classifyVerifyError(err), err)
	}
	if deviceID == "" {
		return "", fmt.Errorf("verify client certificate: %w: no CN", ErrCertUntrusted)
	}
	gen, err := certGeneration(leaf.Subject.OrganizationalUnit)
	if err != nil {
		return "", fmt.Errorf("verify client certificate of %q: %w: %w", deviceID, ErrCertUntrusted, err)
	}
	if current := ca.generation(deviceID); gen != current {
		return "", fmt.Errorf("verify client certificate of %q: %w (generation %d, current %d); the device must provision again",
			deviceID, ErrCertRevoked, gen, current)
	}
	return deviceID, nil
}

func classifyVerifyError(err error) error {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			return ErrCertExpired
		case x509.IncompatibleUsage:
			return ErrCertUsage
		}
	}
	return ErrCertUntrusted
}
