package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// TLSOptions describe the TLS side of one MQTT connection.
type TLSOptions struct {
	// ServerName is the host the server certificate must name: a DNS name or
	// an IP address, without a port (see ParseEndpoint).
	ServerName string
	// Roots is the trust pool, normally from TrustConfig.Roots. It is
	// required: a nil pool would silently mean "the OS roots only".
	Roots *x509.CertPool
	// ClientCertificate returns the certificate to present, and is called at
	// every handshake in which the server asks for one. Keep the current
	// certificate behind a lock and return it here: a renewal then takes
	// effect on the next connection. It may return nil to present none. Nil
	// means no client certificate at all (SAS authentication).
	ClientCertificate func() (*tls.Certificate, error)
	// KeyAlgorithm is the client key's algorithm. An RSA key limits the
	// connection to TLS 1.2 (keys.MaxTLSVersion). A renewal that switches a
	// key to RSA needs a new config: build one per connection attempt.
	KeyAlgorithm keys.Algorithm
}

// ClientTLS builds the client configuration: TLS 1.2 or later, the server
// verified against o.Roots under o.ServerName, and the client certificate
// fetched through o.ClientCertificate.
func ClientTLS(o TLSOptions) (*tls.Config, error) {
	if o.ServerName == "" {
		return nil, errors.New("TLS configuration: the server name is empty")
	}
	if o.Roots == nil {
		return nil, errors.New("TLS configuration: no trust pool (use TrustConfig.Roots)")
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    o.Roots,
		ServerName: o.ServerName,
	}
	if o.KeyAlgorithm.IsRSA() {
		conf.MaxVersion = keys.MaxTLSVersion(o.KeyAlgorithm)
	}
	if get := o.ClientCertificate; get != nil {
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := get()
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			if cert == nil {
				// crypto/tls takes an empty certificate to mean "send none".
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}
	}
	return conf, nil
}

// ParseEndpoint splits "host[:port]" (an IPv6 address in brackets) into the
// TLS server name and the address to dial, adding defaultPort when the port
// is absent.
func ParseEndpoint(endpoint string, defaultPort int) (serverName, address string, err error) {
	s := strings.TrimSpace(endpoint)
	if s == "" {
		return "", "", errors.New("endpoint is empty: use host[:port]")
	}
	if strings.Contains(s, "://") {
		return "", "", fmt.Errorf("endpoint %q: use host[:port] without a scheme", endpoint)
	}
	host, port := s, strconv.Itoa(defaultPort)
	if h, p, splitErr := net.SplitHostPort(s); splitErr == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if host == "" || strings.ContainsAny(host, "/ []") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) ||
		!utf8.ValidString(host) || strings.ContainsFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", "", fmt.Errorf("endpoint %q: the host is not valid: use host[:port], with an IPv6 address in brackets", endpoint)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("endpoint %q: the port is not a number from 1 to 65535", endpoint)
	}
	return host, net.JoinHostPort(host, port), nil
}
