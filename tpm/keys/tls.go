package keys

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// TLSCertificate wraps key and its certificate chain (DER, leaf first) as a TLS
// client certificate. For RSA keys it limits signatures to PKCS#1 v1.5, because
// TPMs produce RSA-PSS signatures with a maximum-length salt that TLS rejects;
// such a certificate therefore works only up to TLS 1.2 (see MaxTLSVersion).
func TLSCertificate(key Key, chain [][]byte) (tls.Certificate, error) {
	if len(chain) == 0 {
		return tls.Certificate{}, fmt.Errorf("TLS certificate: the chain is empty")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("TLS certificate: parse leaf: %w", err)
	}
	cert := tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	if key.Algorithm().IsRSA() {
		cert.SupportedSignatureAlgorithms = []tls.SignatureScheme{
			tls.PKCS1WithSHA256, tls.PKCS1WithSHA384, tls.PKCS1WithSHA512,
		}
	}
	return cert, nil
}

// MaxTLSVersion is the highest TLS version a client certificate on a key of this
// algorithm can authenticate with (TLS 1.3 forbids PKCS#1 v1.5 handshake signatures).
func MaxTLSVersion(alg Algorithm) uint16 {
	if alg.IsRSA() {
		return tls.VersionTLS12
	}
	return tls.VersionTLS13
}
