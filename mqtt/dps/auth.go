package dps

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dpsagent/dpsagent/mqtt/sas"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// AuthMethod names an onboarding credential kind, as logs and errors show it.
type AuthMethod string

// The onboarding credentials DPS takes over MQTT (TPM attestation is not
// supported over MQTT).
const (
	AuthSymmetricKey AuthMethod = "symmetric_key"
	AuthGroupKey     AuthMethod = "group_key"
	AuthX509         AuthMethod = "x509"
)

// Auth is the onboarding credential. Make one with SymmetricKey, GroupKey or
// X509; the zero value is no credential and is refused. It never prints its
// key, whatever the format verb.
type Auth struct {
	method AuthMethod
	key    []byte   // the decoded device or group key
	signer keys.Key // X.509
	chain  [][]byte // X.509: DER, leaf first
}

// SymmetricKey authenticates with an individual enrollment's (decoded) key.
func SymmetricKey(deviceKey []byte) Auth {
	return Auth{method: AuthSymmetricKey, key: bytes.Clone(deviceKey)}
}

// GroupKey authenticates as a member of a symmetric-key enrollment group:
// the device key is derived from the (decoded) group key and the
// registration ID with sas.DeriveDeviceKey.
func GroupKey(groupKey []byte) Auth {
	return Auth{method: AuthGroupKey, key: bytes.Clone(groupKey)}
}

// X509 authenticates with a birth certificate: key signs the TLS handshake
// and chain is the certificate chain in DER, leaf first, including the
// intermediates DPS needs to reach the enrolled CA.
func X509(key keys.Key, chain [][]byte) Auth {
	c := make([][]byte, len(chain))
	for i, der := range chain {
		c[i] = bytes.Clone(der)
	}
	return Auth{method: AuthX509, signer: key, chain: c}
}

// Method says which kind of credential this is; empty for the zero Auth.
func (a Auth) Method() AuthMethod { return a.method }

// String names the method only: the key is a secret.
func (a Auth) String() string {
	if a.method == "" {
		return "no credential"
	}
	return string(a.method) + " (secret not shown)"
}

// GoString keeps %#v from printing the key too.
func (a Auth) GoString() string { return "dps.Auth{" + a.String() + "}" }

func (a Auth) validate(registrationID string) error {
	switch a.method {
	case AuthSymmetricKey, AuthGroupKey:
		if len(a.key) == 0 {
			return errors.New("the symmetric key is empty: put the base64 key, as shown in the Azure portal, in the key file")
		}
		return nil
	case AuthX509:
		return a.validateX509(registrationID)
	}
	return errors.New("no onboarding credential: use a symmetric key, an enrollment group key or an X.509 certificate")
}

// validateX509 catches locally what DPS would refuse with a bare "not
// authorized": a leaf for another name or for another key.
func (a Auth) validateX509(registrationID string) error {
	if a.signer == nil {
		return errors.New("X.509 onboarding: no private key")
	}
	if len(a.chain) == 0 {
		return errors.New("X.509 onboarding: the certificate chain is empty: give the birth certificate (PEM), followed by its intermediates")
	}
	leaf, err := x509.ParseCertificate(a.chain[0])
	if err != nil {
		return fmt.Errorf("X.509 onboarding: parse the birth certificate: %w", err)
	}
	if leaf.Subject.CommonName != registrationID {
		return fmt.Errorf("X.509 onboarding: the birth certificate's subject CN is %q but the registration ID is %q: DPS requires them to be equal", leaf.Subject.CommonName, registrationID)
	}
	pub, ok := a.signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return errors.New("X.509 onboarding: the birth certificate is not for the configured key: check that the certificate file and the key belong together")
	}
	return nil
}

// deviceKey is the key that signs SAS tokens.
func (a Auth) deviceKey(registrationID string) []byte {
	if a.method == AuthGroupKey {
		return sas.DeriveDeviceKey(a.key, registrationID)
	}
	return a.key
}

// tlsCertificate is the client certificate for X.509 onboarding.
func (a Auth) tlsCertificate() (tls.Certificate, error) {
	return keys.TLSCertificate(a.signer, slices.Clone(a.chain))
}

// keyAlgorithm is the client key's algorithm, "" without one.
func (a Auth) keyAlgorithm() keys.Algorithm {
	if a.method != AuthX509 {
		return ""
	}
	return a.signer.Algorithm()
}

// clip shortens text from configuration or the network for messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}
