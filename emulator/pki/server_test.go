package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/emulator/pki"
)

func TestServerCertificate(t *testing.T) {
	dir := t.TempDir()
	s, err := pki.OpenServerCA(dir, pki.Options{Now: (&clock{testNow}).now})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.ServerCertificate([]string{"Hub.Example.Test", "10.1.2.3", "[fe80::1]:8883", "dps.example.test:8883", "hub.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "hub.example.test", "dps.example.test", "10.1.2.3", "fe80::1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, CurrentTime: testNow}); err != nil {
			t.Errorf("not valid for %s: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example.test", CurrentTime: testNow}); err == nil {
		t.Error("valid for a host it was not made for")
	}
	if got := strings.Join(cert.Leaf.DNSNames, ","); got != "hub.example.test,dps.example.test,localhost" {
		t.Errorf("DNS SANs %s (IPs must not be DNS names, duplicates folded)", got)
	}
	if len(cert.Leaf.IPAddresses) != 4 {
		t.Errorf("IP SANs %v, want 10.1.2.3, fe80::1, 127.0.0.1, ::1", cert.Leaf.IPAddresses)
	}

	// The CA persists; its certificates verify with the reopened one.
	again, err := pki.OpenServerCA(dir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().Equal(s.Certificate()) {
		t.Error("reopening created a new TLS CA")
	}
}

// TestServerCertificateHandshake checks the certificate in a real TLS 1.2
// and 1.3 handshake on loopback, as a device would see it.
func TestServerCertificateHandshake(t *testing.T) {
	s, err := pki.OpenServerCA(t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.ServerCertificate([]string{"hub.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(s.Certificate())
	for _, tc := range []struct {
		serverName string
		version    uint16
	}{{"localhost", tls.VersionTLS12}, {"127.0.0.1", tls.VersionTLS13}, {"hub.example.test", tls.VersionTLS12}} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
			RootCAs: roots, ServerName: tc.serverName, MinVersion: tc.version, MaxVersion: tc.version,
		})
		if err != nil {
			t.Errorf("handshake as %s: %v", tc.serverName, err)
			continue
		}
		conn.Close()
	}
}
