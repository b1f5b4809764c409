package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

const (
	serverCALifetime   = 10 * 365 * 24 * time.Hour
	serverLeafLifetime = 365 * 24 * time.Hour
)

// ServerCA is the emulator's TLS CA, separate from the device PKI so that
// trusting the emulator's listeners never means trusting device
// certificates, and the other way round. It never changes after opening, so
// it is safe for concurrent use without locking.
type ServerCA struct {
	now func() time.Time
	ca  *authority
}

// OpenServerCA loads the TLS CA from dir, creating dir and the CA on first
// use; the certificate file is written last and marks it complete.
func OpenServerCA(dir string, opts Options) (*ServerCA, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("open TLS CA: create data directory: %w", err)
	}
	files := authorityFiles{cert: ServerCAFile, key: serverCAKeyFile}
	s := &ServerCA{now: opts.clock()}
	created, err := exists(dir, ServerCAFile)
	if err != nil {
		return nil, fmt.Errorf("open TLS CA in %s: %w", dir, err)
	}
	if created {
		if s.ca, err = loadAuthority(dir, files); err != nil {
			return nil, fmt.Errorf("open TLS CA: %w", err)
		}
		return s, nil
	}
	s.ca, err = newSelfSignedCA(pkix.Name{Organization: []string{"iotemu"}, CommonName: "iotemu TLS CA"},
		elliptic.P256(), s.now(), serverCALifetime)
	if err != nil {
		return nil, fmt.Errorf("open TLS CA: %w", err)
	}
	if err := s.ca.save(dir, files); err != nil {
		return nil, fmt.Errorf("open TLS CA: %w", err)
	}
	return s, nil
}

// Certificate is the TLS CA certificate, the one clients must trust. The
// caller must not modify it.
func (s *ServerCA) Certificate() *x509.Certificate { return s.ca.cert }

// ServerCertificate makes a fresh key and certificate for a listener,
// valid for hosts and always for localhost, 127.0.0.1 and ::1. A host may
// carry a port ("hub.local:8883") or IPv6 brackets; IP addresses become IP
// SANs and anything else a DNS SAN (wildcards allowed).
func (s *ServerCA) ServerCertificate(hosts []string) (tls.Certificate, error) {
	dnsNames, ips, err := serverSANs(hosts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: generate key: %w", err)
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	now := s.now()
	notAfter := now.Add(serverLeafLifetime)
	if notAfter.After(s.ca.cert.NotAfter) {
		notAfter = s.ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		// The CN is informational: clients match the SANs.
		Subject:               pkix.Name{Organization: []string{"iotemu"}, CommonName: dnsNames[0]},
		NotBefore:             now.Add(-caBackdate).Truncate(time.Second),
		NotAfter:              notAfter.Truncate(time.Second),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.cert, key.Public(), s.ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate for %s: %w", strings.Join(dnsNames, ", "), err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: parse the new certificate: %w", err)
	}
	// The CA is a root the client already holds, so the chain sent is the
	// leaf alone.
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// serverSANs sorts hosts into DNS names and IP addresses, adds the loopback
// names, and drops duplicates. The first DNS name is the configured one when
// there is one, since it becomes the CN.
func serverSANs(hosts []string) ([]string, []net.IP, error) {
	var (
		dnsNames []string
		ips      []net.IP
	)
	for _, h := range append(slices.Clone(hosts), "localhost", "127.0.0.1", "::1") {
		h = strings.TrimSpace(h)
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if strings.ContainsAny(name, " /:@") {
			return nil, nil, fmt.Errorf("host %q is neither a DNS name nor an IP address", h)
		}
		if !slices.Contains(dnsNames, name) {
			dnsNames = append(dnsNames, name)
		}
	}
	if len(dnsNames) == 0 {
		return nil, nil, errors.New("no DNS name") // unreachable: localhost is always added
	}
	return dnsNames, ips, nil
}
