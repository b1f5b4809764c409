package softkey_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/keys/keytest"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

func TestKeysRoundTripThroughBlob(t *testing.T) {
	for _, tc := range []struct {
		create, want keys.Algorithm
	}{
		{keys.ECDSAP256, keys.ECDSAP256},
		{keys.ECDSAP384, keys.ECDSAP384},
		{keys.RSA2048, keys.RSA2048},
		// Azure's PKI documents P-384 for issued certificates.
		{keys.Auto, keys.ECDSAP384},
	} {
		t.Run(string(tc.create), func(t *testing.T) {
			b := &softkey.Backend{}
			k, err := b.CreateKey(tc.create)
			if err != nil {
				t.Fatal(err)
			}
			if k.Algorithm() != tc.want || k.Storage() != keys.StorageFile {
				t.Fatalf("CreateKey(%s) made a %s key in %s, want %s in file", tc.create, k.Algorithm(), k.Storage(), tc.want)
			}
			if alg, err := keys.AlgorithmOf(k.Public()); err != nil || alg != tc.want {
				t.Fatalf("the public key is %s (%v), want %s", alg, err, tc.want)
			}
			block, rest := pem.Decode(k.Blob())
			if block == nil || block.Type != "PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
				t.Fatalf("Blob is not one PKCS#8 PEM block:\n%s", k.Blob())
			}

			loaded, err := b.LoadKey(k.Blob())
			if err != nil {
				t.Fatal(err)
			}
			if loaded.Algorithm() != tc.want || !bytes.Equal(loaded.Blob(), k.Blob()) {
				t.Fatalf("reloaded key is %s with another blob, want %s with the same", loaded.Algorithm(), tc.want)
			}
			if !samePublic(loaded.Public(), k.Public()) {
				t.Fatal("reloaded key has another public key")
			}
			// The loaded key, not just the fresh one, does what DPS and the hub need.
			keytest.CheckCSR(t, loaded, "gateway-001")
			if err := keytest.Handshake(t, loaded, tls.VersionTLS12); err != nil {
				t.Errorf("TLS 1.2 client authentication: %v", err)
			}
			if keys.MaxTLSVersion(tc.want) == tls.VersionTLS13 {
				if err := keytest.Handshake(t, loaded, tls.VersionTLS13); err != nil {
					t.Errorf("TLS 1.3 client authentication: %v", err)
				}
			}
		})
	}
}

func TestCreateKeyRefusesUnknownAlgorithms(t *testing.T) {
	for _, alg := range []keys.Algorithm{"", "rsa-4096", "ed25519", "ECDSA-P256"} {
		if k, err := (&softkey.Backend{}).CreateKey(alg); err == nil || !strings.Contains(err.Error(), "cannot create a software key") {
			t.Errorf("CreateKey(%q) = %v, %v; want a refusal", alg, k, err)
		}
	}
}

func TestLoadKeyRefusesWhatIsNotADpsagentKey(t *testing.T) {
	good, err := (&softkey.Backend{}).CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := good.(*softkey.Key).Signer.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good.Blob())

	for _, tc := range []struct {
		name, want string
		blob       []byte
	}{
		{"empty", "not a PKCS#8 PEM block", nil},
		{"garbage", "not a PKCS#8 PEM block", []byte("not a key at all\n")},
		{"DER without PEM", "not a PKCS#8 PEM block", block.Bytes},
		{"SEC1 EC key", "not a PKCS#8 PEM block", pemOf("EC PRIVATE KEY", sec1)},
		{"PKCS#1 RSA key", "not a PKCS#8 PEM block", pemOf("RSA PRIVATE KEY", rsaPKCS1(t))},
		{"encrypted PKCS#8", "not a PKCS#8 PEM block", pemOf("ENCRYPTED PRIVATE KEY", block.Bytes)},
		{"public key", "not a PKCS#8 PEM block", pemOf("PUBLIC KEY", pubDER)},
		{"trailing garbage", "unexpected data after the PEM block", append(good.Blob(), "garbage"...)},
		{"two keys", "unexpected data after the PEM block", append(good.Blob(), good.Blob()...)},
		{"corrupt PKCS#8", "read software key", pemOf("PRIVATE KEY", block.Bytes[:len(block.Bytes)-8])},
		{"Ed25519", "unsupported public key type", pkcs8(t, ed25519Key(t))},
		{"P-521", "unsupported ECDSA curve", pkcs8(t, ecKeyOn(t, elliptic.P521()))},
		{"RSA-1024", "unsupported RSA key size 1024", pkcs8(t, rsaKey(t, 1024))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := (&softkey.Backend{}).LoadKey(tc.blob)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadKey = %v, %v; want an error containing %q", k, err, tc.want)
			}
		})
	}
	// Whitespace after the block is what editors leave; it is not garbage.
	if _, err := (&softkey.Backend{}).LoadKey(append(good.Blob(), "\r\n\t \n"...)); err != nil {
		t.Errorf("LoadKey with trailing whitespace: %v", err)
	}
}

func TestLoadFileRefusesKeysOthersCanRead(t *testing.T) {
	k, err := (&softkey.Backend{}).CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o610, false}, // group-executable: still a group bit
	} {
		t.Run(fmt.Sprintf("%04o", tc.mode), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "birth.key")
			if err := os.WriteFile(path, k.Blob(), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil { // not subject to the umask
				t.Fatal(err)
			}
			got, err := softkey.LoadFile(path)
			if tc.ok {
				if err != nil {
					t.Fatalf("LoadFile of a %04o key: %v", tc.mode, err)
				}
				if !samePublic(got.Public(), k.Public()) {
					t.Fatal("LoadFile returned another key")
				}
				return
			}
			if err == nil {
				t.Fatalf("LoadFile accepted a key file of mode %04o", tc.mode)
			}
			for _, want := range []string{"chmod 600 " + path, path} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("nonsense"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.key"), "missing.key"},
		{bad, bad + ": read software key"},
	} {
		if _, err := softkey.LoadFile(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadFile(%s) error = %v, want it to contain %q", tc.path, err, tc.want)
		}
	}
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf("PRIVATE KEY", der)
}

func rsaKey(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaPKCS1(t *testing.T) []byte {
	return x509.MarshalPKCS1PrivateKey(rsaKey(t, 2048))
}

func ecKeyOn(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ed25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
