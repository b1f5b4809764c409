package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string, parent *testCA) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

type leafOpt func(*x509.Certificate)

func (ca *testCA) issue(t *testing.T, pub crypto.PublicKey, cn string, opts ...leafOpt) []byte {
	t.Helper()
	return ca.issueAt(t, time.Now(), pub, cn, opts...)
}

// issueAt issues a one-hour certificate starting a minute before now.
func (ca *testCA) issueAt(t *testing.T, now time.Time, pub crypto.PublicKey, cn string, opts ...leafOpt) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, o := range opts {
		o(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyIssuedChain(t *testing.T) {
	root := newCA(t, "root", nil)
	issuing := newCA(t, "issuing", root)
	otherRoot := newCA(t, "other root", nil)
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	now := time.Now()
	good := issuing.issue(t, &key.PublicKey, "gw-1")
	for _, tc := range []struct {
		name  string
		chain [][]byte
		want  string // "" = accepted
	}{
		{"leaf, issuing, root (Azure's order)", [][]byte{good, issuing.cert.Raw, root.cert.Raw}, ""},
		{"root first (as one SDK's test data)", [][]byte{root.cert.Raw, issuing.cert.Raw, good}, ""},
		{"without the root", [][]byte{good, issuing.cert.Raw}, "does not verify"},
		{"empty", nil, "empty"},
		{"garbage", [][]byte{[]byte("not DER")}, "does not parse"},
		{"leaf for another key", [][]byte{issuing.issue(t, &other.PublicKey, "gw-1"), issuing.cert.Raw, root.cert.Raw}, "is for our key"},
		{"wrong CN", [][]byte{issuing.issue(t, &key.PublicKey, "gw-2"), issuing.cert.Raw, root.cert.Raw}, `is for "gw-2"`},
		{"server-only EKU", [][]byte{issuing.issue(t, &key.PublicKey, "gw-1", func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), issuing.cert.Raw, root.cert.Raw}, "client authentication"},
		{"already expired", [][]byte{issuing.issue(t, &key.PublicKey, "gw-1", func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour)
		}), issuing.cert.Raw, root.cert.Raw}, "expired"},
		{"chain to a root it does not contain", [][]byte{good, issuing.cert.Raw, otherRoot.cert.Raw}, "does not verify"},
		{"too long", make([][]byte, 9), "more than 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := VerifyIssuedChain(tc.chain, &key.PublicKey, "gw-1", now)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(v.Chain) != 3 || v.Chain[0] != v.Leaf || v.Chain[2].Subject.CommonName != "root" {
					t.Fatalf("chain not ordered leaf, issuing, root: %v", v.Chain)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrBadChain) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadChain mentioning %q", err, tc.want)
			}
		})
	}
}

// A device clock a little behind the issuer must not reject a fresh certificate.
func TestVerifyIssuedChainToleratesASlowClock(t *testing.T) {
	root := newCA(t, "root", nil)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := root.issue(t, &key.PublicKey, "gw-1", func(c *x509.Certificate) { c.NotBefore = time.Now().Add(30 * time.Second) })
	if _, err := VerifyIssuedChain([][]byte{leaf, root.cert.Raw}, &key.PublicKey, "gw-1", time.Now()); err != nil {
		t.Fatal(err)
	}
}

func FuzzVerifyIssuedChain(f *testing.F) {
	f.Add([]byte("x"), []byte{0x30, 0x82, 0x01})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		v, err := VerifyIssuedChain([][]byte{a, b}, &key.PublicKey, "gw", time.Now())
		if err == nil && v.Leaf == nil {
			t.Fatal("accepted without a leaf")
		}
	})
}
