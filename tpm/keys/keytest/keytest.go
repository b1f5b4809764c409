// Package keytest checks any keys.Key the way its users will use it: a CSR that
// openssl accepts, and TLS client authentication against a Go server that
// requires a client certificate. Both key backends' tests run these checks.
package keytest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// RequireTool returns the path of an external tool, failing the test under
// CI=true and skipping it elsewhere when the tool is missing.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed: run `make test` as root (it installs it), or apt-get install %s", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// CheckCSR builds a CSR with key and checks what DPS will check: the CN, the
// clientAuth extended key usage, the signature algorithm, and a signature that
// both Go and `openssl req -verify` accept.
func CheckCSR(t testing.TB, key keys.Key, cn string) *x509.CertificateRequest {
	t.Helper()
	der, err := keys.NewCSR(key, cn)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("parse CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	if csr.Subject.CommonName != cn {
		t.Errorf("CSR CN = %q, want %q", csr.Subject.CommonName, cn)
	}
	want := map[keys.Algorithm]x509.SignatureAlgorithm{
		keys.ECDSAP256: x509.ECDSAWithSHA256,
		keys.ECDSAP384: x509.ECDSAWithSHA384,
		keys.RSA2048:   x509.SHA256WithRSA,
	}[key.Algorithm()]
	if csr.SignatureAlgorithm != want {
		t.Errorf("CSR signature algorithm = %v, want %v", csr.SignatureAlgorithm, want)
	}
	if !hasClientAuth(csr) {
		t.Errorf("CSR has no extended key usage clientAuth")
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	if !bytes.Equal(csr.RawSubjectPublicKeyInfo, pubDER) {
		t.Errorf("CSR public key is not the key's")
	}

	openssl := RequireTool(t, "openssl", "openssl")
	path := filepath.Join(t.TempDir(), "req.pem")
	if err := os.WriteFile(path, keys.CSRPEM(der), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "req", "-in", path, "-noout", "-verify").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		t.Errorf("openssl req -verify rejected the CSR: %v\n%s", err, out)
	}
	return csr
}

func hasClientAuth(csr *x509.CertificateRequest) bool {
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 37}) {
			continue
		}
		var usages []asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(ext.Value, &usages); err != nil {
			return false
		}
		for _, u := range usages {
			if u.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}) {
				return true
			}
		}
	}
	return false
}

// Handshake issues a certificate for key from a throwaway CA, then completes a
// TLS handshake at exactly the given version against a server that requires and
// verifies client certificates. It returns the handshake error, if any, after
// checking that the server saw the key's certificate.
func Handshake(t testing.TB, key keys.Key, version uint16) error {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		DNSNames: []string{"localhost"},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "device"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := keys.TLSCertificate(key, [][]byte{leafDER})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	serverCert := tls.Certificate{Certificate: [][]byte{caDER}, PrivateKey: caKey}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   version, MaxVersion: version,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seen := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			seen <- err
			return
		}
		peer := tc.ConnectionState().PeerCertificates
		if len(peer) == 0 || !bytes.Equal(peer[0].Raw, leafDER) {
			seen <- errors.New("server did not see the key's certificate")
			return
		}
		seen <- nil
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      pool,
		ServerName:   "localhost",
		Certificates: []tls.Certificate{clientCert},
		MinVersion:   version, MaxVersion: version,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Handshake(); err != nil {
		return err
	}
	// TLS 1.3 sends the client certificate after the client's handshake ends;
	// the server's verdict is what counts.
	return <-seen
}
