package softkey_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// base64Run is a stretch of a PEM body long enough to be key material.
var base64Run = regexp.MustCompile(`[A-Za-z0-9+/]{20,}`)

// FuzzLoadKey feeds the software backend what a key file could hold: the
// state directory's key blobs with tpm: none, and onboarding.x509.key:
// file:PATH. LoadKey and LoadFile must never panic and must agree; they
// give a key or an error, never both; an error never repeats the file's
// base64 (a private key); and an accepted key is one the agent can use: it
// signs what its public key verifies, and its Blob loads again to the same
// key and the same Blob.
//
//	go test -run '^$' -fuzz FuzzLoadKey -fuzztime 60s ./tpm/softkey/
func FuzzLoadKey(f *testing.F) {
	b := &softkey.Backend{}
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.ECDSAP384, keys.RSA2048} {
		k, err := b.CreateKey(alg)
		if err != nil {
			f.Fatal(err)
		}
		blob := k.Blob()
		f.Add(blob)
		f.Add(bytes.ReplaceAll(blob, []byte("\n"), []byte("\r\n")))
		f.Add(append([]byte("Bag Attributes\n    localKeyID: 01\n"), blob...))
		f.Add(append(blob[:len(blob):len(blob)], "garbage"...))
		block, _ := pem.Decode(blob)
		f.Add(block.Bytes)
		f.Add(pemOf("PRIVATE KEY", block.Bytes[:len(block.Bytes)-8]))
		f.Add(pemOf("ENCRYPTED PRIVATE KEY", block.Bytes))
		if ec, ok := k.(*softkey.Key).Signer.(*ecdsa.PrivateKey); ok {
			if sec1, err := x509.MarshalECPrivateKey(ec); err == nil {
				f.Add(pemOf("EC PRIVATE KEY", sec1))
			}
		}
		if r, ok := k.(*softkey.Key).Signer.(*rsa.PrivateKey); ok {
			f.Add(pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(r)))
		}
	}
	for _, gen := range []func() (any, error){
		func() (any, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err },
		func() (any, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) },
		func() (any, error) { return rsa.GenerateKey(rand.Reader, 1024) },
	} {
		k, err := gen()
		if err != nil {
			f.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pemOf("PRIVATE KEY", der))
	}
	f.Add([]byte{})
	f.Add([]byte("not a key at all\n"))

	path := filepath.Join(f.TempDir(), "birth.key")
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := b.LoadKey(data)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fk, ferr := softkey.LoadFile(path)
		if (ferr == nil) != (err == nil) {
			t.Fatalf("LoadKey says %v, LoadFile says %v", err, ferr)
		}
		if err != nil {
			if k != nil || fk != nil {
				t.Fatalf("a key returned together with the error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "read software key: ") && !strings.HasPrefix(err.Error(), "software key: ") {
				t.Fatalf("the error does not say what was being read: %v", err)
			}
			if !strings.Contains(ferr.Error(), path) {
				t.Fatalf("LoadFile's error does not name the file: %v", ferr)
			}
			// A leaked key is a run of base64; the path is one too.
			msg := strings.ReplaceAll(ferr.Error(), path, "PATH")
			for _, run := range base64Run.FindAllString(string(data), -1) {
				if strings.Contains(msg, run) {
					t.Fatalf("the error repeats the file's text %q: %v", run, ferr)
				}
			}
			return
		}
		if k.Storage() != keys.StorageFile {
			t.Fatalf("a software key stored in %q", k.Storage())
		}
		if alg, err := keys.AlgorithmOf(k.Public()); err != nil || alg != k.Algorithm() {
			t.Fatalf("the key says %s, its public key is %s (%v)", k.Algorithm(), alg, err)
		}
		if !bytes.Equal(fk.Blob(), k.Blob()) {
			t.Fatal("LoadKey and LoadFile read different keys")
		}
		digest := sha256.Sum256(data)
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("the accepted key cannot sign: %v", err)
		}
		switch pub := k.Public().(type) {
		case *ecdsa.PublicKey:
			if !ecdsa.VerifyASN1(pub, digest[:], sig) {
				t.Fatal("the signature does not verify under the key's own public key")
			}
		case *rsa.PublicKey:
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
				t.Fatalf("the signature does not verify under the key's own public key: %v", err)
			}
		default:
			t.Fatalf("accepted a %T key", pub)
		}
		again, err := b.LoadKey(k.Blob())
		if err != nil {
			t.Fatalf("the Blob of an accepted key does not load: %v", err)
		}
		if !bytes.Equal(again.Blob(), k.Blob()) || !samePublic(again.Public(), k.Public()) {
			t.Fatal("the reloaded Blob is another key")
		}
	})
}
