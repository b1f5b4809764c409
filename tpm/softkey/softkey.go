// Package softkey is the key backend for devices without a TPM, and for
// development and fleet simulations: keys are ordinary private keys kept as
// PKCS#8 PEM in files of mode 0600. It is never chosen silently; configuration
// must say `tpm: none`.
package softkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Backend creates software keys from crypto/rand. The zero value is ready to use.
type Backend struct{}

var _ keys.Backend = (*Backend)(nil)

// CreateKey generates a key; Auto means ECDSA P-384, as Azure's PKI documents.
func (b *Backend) CreateKey(alg keys.Algorithm) (keys.Key, error) {
	r := rand.Reader
	var (
		priv crypto.Signer
		err  error
	)
	switch alg {
	case keys.Auto, keys.ECDSAP384:
		alg = keys.ECDSAP384
		priv, err = ecdsa.GenerateKey(elliptic.P384(), r)
	case keys.ECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), r)
	case keys.RSA2048:
		priv, err = rsa.GenerateKey(r, 2048)
	default:
		return nil, fmt.Errorf("cannot create a software key of algorithm %q", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s software key: %w", alg, err)
	}
	return keyOrNil(newKey(priv))
}

// LoadKey parses a PKCS#8 PEM blob, as written by Key.Blob.
func (b *Backend) LoadKey(blob []byte) (keys.Key, error) {
	block, rest := pem.Decode(blob)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("read software key: not a PKCS#8 PEM block (-----BEGIN PRIVATE KEY-----)")
	}
	if !onlySpace(rest) {
		return nil, errors.New("read software key: unexpected data after the PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read software key: %w", err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read software key: %T cannot sign", parsed)
	}
	return keyOrNil(newKey(signer))
}

// keyOrNil returns a nil keys.Key with an error: returning newKey's nil *Key
// as it is would make a non-nil interface holding a nil pointer.
func keyOrNil(k *Key, err error) (keys.Key, error) {
	if err != nil {
		return nil, err
	}
	return k, nil
}

// Close does nothing; software keys hold no device.
func (b *Backend) Close() error { return nil }

// LoadFile reads a key file such as an X.509 birth certificate's key, refusing
// one that group or others can read: a key readable by others is a key that
// may already be copied.
func LoadFile(path string) (keys.Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o, readable by others: run chmod 600 %s (and consider the key exposed)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	k, err := (&Backend{}).LoadKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// Key is a software signing key.
type Key struct {
	crypto.Signer
	alg  keys.Algorithm
	blob []byte
}

var _ keys.Key = (*Key)(nil)

func newKey(priv crypto.Signer) (*Key, error) {
	alg, err := keys.AlgorithmOf(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("software key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode software key: %w", err)
	}
	return &Key{Signer: priv, alg: alg, blob: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}, nil
}

// Algorithm names the key type.
func (k *Key) Algorithm() keys.Algorithm { return k.alg }

// Storage is always keys.StorageFile.
func (k *Key) Storage() keys.Storage { return keys.StorageFile }

// Blob is the PKCS#8 PEM private key: secret, to be stored with mode 0600.
func (k *Key) Blob() []byte { return append([]byte(nil), k.blob...) }

func onlySpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}
