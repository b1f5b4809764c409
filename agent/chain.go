package agent

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrBadChain marks an issued chain that failed a check: nothing of it is stored.
var ErrBadChain = errors.New("the issued certificate chain was rejected")

// maxChainLength bounds work on a hostile answer; Azure's chain is 3 long.
const maxChainLength = 8

// VerifiedChain is an issued chain that passed every check, ordered leaf first,
// then intermediates, then the root.
type VerifiedChain struct {
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
}

// DER returns the chain as DER, leaf first: what TLS presents.
func (v *VerifiedChain) DER() [][]byte {
	out := make([][]byte, len(v.Chain))
	for i, c := range v.Chain {
		out[i] = c.Raw
	}
	return out
}

// VerifyIssuedChain checks a chain from DPS or the hub credential API before it
// is trusted: the leaf holds our public key, the chain verifies up to the root
// it contains, the leaf's CN is the registration ID, it allows client
// authentication, and its validity window is sane at now. The order of the
// certificates as received is not trusted (SDKs and tests disagree on it).
func VerifyIssuedChain(der [][]byte, pub crypto.PublicKey, registrationID string, now time.Time) (*VerifiedChain, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: it is empty (does the enrollment issue certificates?)", ErrBadChain)
	}
	if len(der) > maxChainLength {
		return nil, fmt.Errorf("%w: %d certificates, more than %d", ErrBadChain, len(der), maxChainLength)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: encode our public key: %v", ErrBadChain, err)
	}
	certs := make([]*x509.Certificate, 0, len(der))
	var leaf *x509.Certificate
	for i, b := range der {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d does not parse: %v", ErrBadChain, i, err)
		}
		certs = append(certs, c)
		if !c.IsCA && bytes.Equal(c.RawSubjectPublicKeyInfo, pubDER) {
			leaf = c
		}
	}
	if leaf == nil {
		return nil, fmt.Errorf("%w: no certificate in it is for our key (the service answered for another key or another request)", ErrBadChain)
	}
	if leaf.Subject.CommonName != registrationID {
		return nil, fmt.Errorf("%w: the certificate is for %q, not for this device's registration ID %q", ErrBadChain, leaf.Subject.CommonName, registrationID)
	}
	if !allowsClientAuth(leaf) {
		return nil, fmt.Errorf("%w: the certificate does not allow TLS client authentication", ErrBadChain)
	}
	if !leaf.NotAfter.After(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: its validity window is empty (%s to %s)", ErrBadChain, stamp(leaf.NotBefore), stamp(leaf.NotAfter))
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: it expired at %s (now %s): the service issued an expired certificate, or this device's clock is wrong", ErrBadChain, stamp(leaf.NotAfter), stamp(now))
	}

	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range certs {
		if c == leaf {
			continue
		}
		if c.IsCA && bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	// Verify at a time inside the leaf's window: a device whose clock lags
	// the issuer by seconds must not reject a fresh certificate; expiry was
	// checked against now above.
	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	paths, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: it does not verify up to the root it contains: %v", ErrBadChain, err)
	}
	return &VerifiedChain{Leaf: leaf, Chain: paths[0]}, nil
}

func allowsClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true // no EKU extension: any use
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
