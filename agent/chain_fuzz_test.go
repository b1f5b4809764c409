package agent

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzKeyPEM is the device key of FuzzStoredChain: fixed, so a chain the
// fuzzer found in one worker is for the key of every other, and reaches the
// checks after the leaf is found. A test key, never used anywhere else.
const fuzzKeyPEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZ5oKNSXcntdz95SN
UOVlhRe06u7YjhTYIXjVayDjO/ahRANCAAQlQqRTUhmdPqkzPgivYrUSw+jK8KZ3
gTTNLWWaT/qRm/UbwlmK/240IH2mQ0vKLTosLA66eRlNR7iPBUj+NrSP
-----END PRIVATE KEY-----
`

// fuzzNow is the clock of FuzzStoredChain; the seed chains are valid then.
var fuzzNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// FuzzStoredChain feeds what loadIdentity reads from a stored chain file
// (and `dpsagent status` and `check` read too) through decodeChain and
// VerifyIssuedChain. They must never panic and never return a result with
// an error; decodeChain's chain is the file's CERTIFICATE blocks, and writes
// back (encodeChain) to a file that reads the same; a chain VerifyIssuedChain
// accepts has a leaf for the device's key and registration ID, valid now and
// allowed for client authentication, and a verified path made of the
// stored certificates, leaf first, ending at a self-signed root.
//
//	go test -run '^$' -fuzz FuzzStoredChain -fuzztime 60s ./agent/
func FuzzStoredChain(f *testing.F) {
	block, _ := pem.Decode([]byte(fuzzKeyPEM))
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	key := parsed.(crypto.Signer)
	pub := key.Public()

	// Real chains: root, intermediate, leaf, as DPS issues them, stored
	// leaf first; and the orders and damage a file could show.
	root := fuzzCA(f, "root", nil)
	inter := fuzzCA(f, "intermediate", root)
	leaf := fuzzLeaf(f, inter, pub, "gw-1")
	good := encodeChain([][]byte{leaf, inter.cert.Raw, root.cert.Raw})
	f.Add(good)
	f.Add(encodeChain([][]byte{root.cert.Raw, leaf, inter.cert.Raw}))
	f.Add(encodeChain([][]byte{leaf, root.cert.Raw}))
	f.Add(encodeChain([][]byte{leaf}))
	f.Add(encodeChain([][]byte{fuzzLeaf(f, root, pub, "gw-1")[:100], root.cert.Raw}))
	f.Add(encodeChain([][]byte{fuzzLeaf(f, root, pub, "other-device"), root.cert.Raw}))
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))
	f.Add(append([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), good...))
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := decodeChain(data)
		if (len(chain) == 0) == (err == nil) {
			t.Fatalf("decodeChain = %d certificates, %v: want exactly one", len(chain), err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "holds no certificate") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		again, err := decodeChain(encodeChain(chain))
		if err != nil || !slices.EqualFunc(again, chain, bytes.Equal) {
			t.Fatalf("the chain written back reads as %d certificates, %v", len(again), err)
		}
		v, err := VerifyIssuedChain(chain, pub, "gw-1", fuzzNow)
		if err != nil {
			if v != nil {
				t.Fatalf("VerifyIssuedChain returned a chain together with %v", err)
			}
			if !errors.Is(err, ErrBadChain) {
				t.Fatalf("%v does not wrap ErrBadChain", err)
			}
			return
		}
		if v.Leaf == nil || len(v.Chain) == 0 || v.Chain[0] != v.Leaf {
			t.Fatalf("accepted a chain without its leaf first: %+v", v)
		}
		if !v.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatal("accepted a leaf for another key")
		}
		if v.Leaf.Subject.CommonName != "gw-1" || !allowsClientAuth(v.Leaf) {
			t.Fatalf("accepted a leaf for %q, client auth %v", v.Leaf.Subject.CommonName, allowsClientAuth(v.Leaf))
		}
		if !fuzzNow.Before(v.Leaf.NotAfter) || !v.Leaf.NotAfter.After(v.Leaf.NotBefore) {
			t.Fatalf("accepted a leaf valid %s to %s at %s", v.Leaf.NotBefore, v.Leaf.NotAfter, fuzzNow)
		}
		for i, der := range v.DER() {
			if !slices.ContainsFunc(chain, func(c []byte) bool { return bytes.Equal(c, der) }) {
				t.Fatalf("certificate %d of the verified path is not in the stored chain", i)
			}
		}
		last := v.Chain[len(v.Chain)-1]
		if !bytes.Equal(last.RawIssuer, last.RawSubject) || last.CheckSignatureFrom(last) != nil {
			t.Fatal("the verified path does not end at a self-signed root")
		}
	})
}

// fuzzCA is newCA for fuzzNow's clock and any testing.TB.
func fuzzCA(tb testing.TB, name string, parent *testCA) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(name))), Subject: pkix.Name{CommonName: name},
		NotBefore: fuzzNow.Add(-24 * time.Hour), NotAfter: fuzzNow.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func fuzzLeaf(tb testing.TB, ca *testCA, pub crypto.PublicKey, cn string) []byte {
	tb.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: fuzzNow.Add(-time.Hour), NotAfter: fuzzNow.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}
