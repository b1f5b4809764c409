// Package keys holds what every key backend shares: the algorithm names used in
// configuration and state, the Key and Backend interfaces, CSR building, and the
// TLS client certificate built around a key. It imports no TPM library, so the
// agent can depend on it while seeing the TPM only through these interfaces.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"strings"
)

// Algorithm names a key type as written in configuration and in the state manifest.
type Algorithm string

// The algorithms dpsagent can create. Auto is resolved by a backend to a concrete
// algorithm when a key is created; it never appears on a stored key.
const (
	Auto      Algorithm = "auto"
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	RSA2048   Algorithm = "rsa-2048"
)

// Algorithms lists the accepted configuration values, in the order shown to people.
var algorithms = []Algorithm{Auto, ECDSAP256, ECDSAP384, RSA2048}

// ParseAlgorithm reads a configured algorithm name; the error lists the valid ones.
func ParseAlgorithm(s string) (Algorithm, error) {
	a := Algorithm(strings.ToLower(strings.TrimSpace(s)))
	if a == "" {
		return Auto, nil
	}
	for _, known := range algorithms {
		if a == known {
			return a, nil
		}
	}
	names := make([]string, len(algorithms))
	for i, known := range algorithms {
		names[i] = string(known)
	}
	return "", fmt.Errorf("unknown key algorithm %q: use one of %s", s, strings.Join(names, ", "))
}

// Hash is the digest a CSR or certificate signature uses with this algorithm:
// SHA-384 for P-384 (matching the curve's strength, as Azure's CA does), else SHA-256.
func (a Algorithm) Hash() crypto.Hash {
	if a == ECDSAP384 {
		return crypto.SHA384
	}
	return crypto.SHA256
}

// IsRSA reports whether keys of this algorithm are RSA keys.
func (a Algorithm) IsRSA() bool { return a == RSA2048 }

// AlgorithmOf names the algorithm of a public key, or returns an error for key
// types dpsagent does not handle.
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256, nil
		case elliptic.P384():
			return ECDSAP384, nil
		}
		return "", fmt.Errorf("unsupported ECDSA curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() == 2048 {
			return RSA2048, nil
		}
		return "", fmt.Errorf("unsupported RSA key size %d bits (only 2048)", k.N.BitLen())
	}
	return "", fmt.Errorf("unsupported public key type %T", pub)
}

// Storage says where a key's private half lives, as shown in status and reported
// properties.
type Storage string

// Storage values.
const (
	StorageTPM  Storage = "tpm"
	StorageFile Storage = "file"
)

// Key is a signing key held by a backend. Its private half is either inside a TPM
// (Blob is then only loadable by that TPM) or, for the software backend, the Blob
// itself, which callers must store with mode 0600.
type Key interface {
	crypto.Signer
	Algorithm() Algorithm
	Storage() Storage
	// Blob is what the state store persists to load the key again later.
	Blob() []byte
}

// Backend creates and loads keys. It is safe for concurrent use.
type Backend interface {
	// CreateKey makes a new signing key. Auto picks the strongest algorithm the
	// backend supports among those Azure's PKI accepts.
	CreateKey(alg Algorithm) (Key, error)
	// LoadKey turns a blob from Key.Blob back into a usable key.
	LoadKey(blob []byte) (Key, error)
	// Close releases the backend (for a TPM: flushes its handles, closes the device).
	Close() error
}
