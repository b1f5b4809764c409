package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/keys/keytest"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// -tpm-device runs the backend tests against real hardware too, e.g.
// go test ./tpm -tpm-device=/dev/tpmrm0 (keys are created, never persisted).
var tpmDevice = flag.String("tpm-device", "", "also run the TPM tests against this TPM (e.g. /dev/tpmrm0)")

var allAlgorithms = []keys.Algorithm{keys.ECDSAP256, keys.ECDSAP384, keys.RSA2048}

// backend is one kind of TPM the tests run against, with the raw transport kept
// so a test can look inside the TPM behind the code's back.
type backend struct {
	name string
	open func(t *testing.T) (*TPM, transport.TPM)
}

func backends() []backend {
	bs := []backend{
		{"simulator", func(t *testing.T) (*TPM, transport.TPM) {
			tr := tpmtest.Simulator(t)
			tp, err := New(tr, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tp.Close() })
			return tp, tr
		}},
		{"swtpm", func(t *testing.T) (*TPM, transport.TPM) {
			sw := tpmtest.StartSwtpm(t)
			return openSpec(t, sw.Spec)
		}},
	}
	if *tpmDevice != "" {
		bs = append(bs, backend{"device", func(t *testing.T) (*TPM, transport.TPM) { return openSpec(t, *tpmDevice) }})
	}
	return bs
}

// openSpec opens a TPM by its spec. The raw transport it returns is the same
// connection (swtpm serves one connection at a time, and the kernel resource
// manager shows each connection only its own objects), used without our code.
func openSpec(t *testing.T, spec string) (*TPM, transport.TPM) {
	t.Helper()
	tp, err := Open(spec, Options{})
	if err != nil {
		t.Fatalf("Open(%q): %v", spec, err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	return tp, tp.tr
}

// checkNoLeaks fails if anything but the storage root key is loaded.
func checkNoLeaks(t *testing.T, tp *TPM, raw transport.TPM) {
	t.Helper()
	hs, err := transientHandles(raw)
	if err != nil {
		t.Fatal(err)
	}
	var allowed []tpm2.TPMHandle
	if tp.srk != nil && tp.srk.transient {
		allowed = append(allowed, tp.srk.handle.Handle)
	}
	for _, h := range hs {
		if !slices.Contains(allowed, h) {
			t.Errorf("transient handle 0x%08x left loaded (allowed: %v)", uint32(h), allowed)
		}
	}
}

func TestKeysSignCSRsAndAuthenticateTLS(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			tp, raw := b.open(t)
			for _, alg := range allAlgorithms {
				t.Run(string(alg), func(t *testing.T) {
					k, err := tp.CreateKey(alg)
					if err != nil {
						t.Fatal(err)
					}
					if k.Algorithm() != alg || k.Storage() != keys.StorageTPM {
						t.Fatalf("key is %s in %s, want %s in tpm", k.Algorithm(), k.Storage(), alg)
					}
					keytest.CheckCSR(t, k, "gateway-001")
					if err := keytest.Handshake(t, k, tls.VersionTLS12); err != nil {
						t.Errorf("TLS 1.2 client authentication: %v", err)
					}
					if alg.IsRSA() {
						if keys.MaxTLSVersion(alg) != tls.VersionTLS12 {
							t.Error("RSA TPM keys must be limited to TLS 1.2")
						}
					} else if err := keytest.Handshake(t, k, tls.VersionTLS13); err != nil {
						t.Errorf("TLS 1.3 client authentication: %v", err)
					}
					checkNoLeaks(t, tp, raw)
				})
			}
		})
	}
}

func TestKeyAttributesReadBackFromTPM(t *testing.T) {
	tp, _ := backends()[0].open(t)
	for _, alg := range allAlgorithms {
		k, err := tp.CreateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		tk := k.(*Key)
		tp.mu.Lock()
		h, err := tp.load(tk)
		if err != nil {
			tp.mu.Unlock()
			t.Fatal(err)
		}
		rsp, err := tpm2.ReadPublic{ObjectHandle: h.Handle}.Execute(tp.tr)
		_ = flush(tp.tr, h.Handle)
		tp.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			t.Fatal(err)
		}
		a := pub.ObjectAttributes
		want := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, SignEncrypt: true}
		if a != want {
			t.Errorf("%s attributes = %+v, want exactly %+v", alg, a, want)
		}
		if a.Decrypt || a.Restricted || a.EncryptedDuplication || a.AdminWithPolicy {
			t.Errorf("%s key has an attribute that weakens or misuses it: %+v", alg, a)
		}
	}
}

func TestAutoPicksP384WhenTheTPMHasIt(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			tp, _ := b.open(t)
			info, err := tp.Info()
			if err != nil {
				t.Fatal(err)
			}
			want := keys.ECDSAP256
			if slices.Contains(info.ECCCurves, "nist-p384") {
				want = keys.ECDSAP384
			}
			k, err := tp.CreateKey(keys.Auto)
			if err != nil {
				t.Fatal(err)
			}
			if k.Algorithm() != want || info.AutoAlgorithm != want {
				t.Errorf("auto created %s (info says %s), want %s for curves %v", k.Algorithm(), info.AutoAlgorithm, want, info.ECCCurves)
			}
		})
	}
}

func TestSignChecksDigestLength(t *testing.T) {
	tp, _ := backends()[0].open(t)
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	before := tp.Commands()
	if _, err := k.Sign(nil, make([]byte, 20), crypto.SHA256); err == nil || !strings.Contains(err.Error(), "digest is 20 bytes") {
		t.Fatalf("Sign with a short digest: err = %v", err)
	}
	if _, err := k.Sign(nil, make([]byte, 20), crypto.SHA1); err == nil {
		t.Fatal("Sign with SHA-1 succeeded")
	}
	if tp.Commands() != before {
		t.Error("a refused digest still reached the TPM")
	}
	d := sha256.Sum256([]byte("hello"))
	sig, err := k.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature does not verify")
	}
	if n := tp.Commands() - before; n != 3 {
		t.Errorf("a signature took %d TPM commands, want 3 (load, sign, flush)", n)
	}
}

func TestBlobReloadsAfterTPMRestartButNotElsewhere(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	tp, err := Open(sw.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	blob := k.Blob()
	if bytes.Contains(blob, []byte("PRIVATE KEY")) {
		t.Fatal("a TPM blob looks like a plain private key")
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	sw.Stop()

	// The same TPM after a power cycle: the blob loads and signs.
	same := tpmtest.StartSwtpmWithState(t, sw.StateDir)
	tp2, err := Open(same.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	k2, err := tp2.LoadKey(blob)
	if err != nil {
		t.Fatalf("reload blob after restart: %v", err)
	}
	d := sha256.Sum256([]byte("after restart"))
	sig, err := k2.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("reloaded key signs with a different key")
	}

	// Another TPM: refused with a clear error before the TPM is even asked.
	other := tpmtest.StartSwtpm(t)
	tp3, err := Open(other.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp3.Close()
	_, err = tp3.LoadKey(blob)
	if !errors.Is(err, ErrWrongTPM) || !strings.Contains(err.Error(), "dpsagent reset") {
		t.Fatalf("loading a blob into another TPM: err = %v, want ErrWrongTPM with a hint", err)
	}
}

func TestLoadKeyRejectsGarbage(t *testing.T) {
	tp, _ := backends()[0].open(t)
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	good := k.Blob()
	for name, blob := range map[string][]byte{
		"empty":          nil,
		"pem key":        []byte("-----BEGIN PRIVATE KEY-----\n"),
		"other format":   bytes.Replace(good, []byte(blobFormat), []byte("something-else"), 1),
		"wrong alg":      bytes.Replace(good, []byte(`"ecdsa-p256"`), []byte(`"ecdsa-p384"`), 1),
		"unknown field":  bytes.Replace(good, []byte(`{`), []byte(`{"extra":1,`), 1),
		"truncated json": good[:len(good)/2],
	} {
		if _, err := tp.LoadKey(blob); err == nil {
			t.Errorf("%s: LoadKey succeeded", name)
		}
	}
}

func TestTwoKeysCoexist(t *testing.T) {
	tp, raw := backends()[0].open(t)
	a, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if a.Public().(*ecdsa.PublicKey).Equal(b.Public()) {
		t.Fatal("two created keys are the same key")
	}
	d := sha256.Sum256([]byte("x"))
	for i := 0; i < 3; i++ {
		for _, k := range []keys.Key{a, b} {
			sig, err := k.Sign(nil, d[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
				t.Fatal("signature does not verify")
			}
		}
	}
	checkNoLeaks(t, tp, raw)
}

// The simulator, like swtpm, holds three objects. Fill them behind our back (as
// a crashed program would on a TPM without a resource manager): signing must
// clear them and succeed.
func TestSignRecoversFromFullObjectMemory(t *testing.T) {
	tp, raw := backends()[0].open(t)
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		_, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(raw)
		if errors.Is(err, tpm2.TPMRCObjectMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	d := sha256.Sum256([]byte("full"))
	if _, err := k.Sign(nil, d[:], crypto.SHA256); err != nil {
		t.Fatalf("Sign with the TPM's object memory full: %v", err)
	}
	checkNoLeaks(t, tp, raw)
}

func TestCloseLeavesNothingLoaded(t *testing.T) {
	tr := tpmtest.Simulator(t)
	tp, err := New(tr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := tp.CreateKey(keys.ECDSAP384)
	if err != nil {
		t.Fatal(err)
	}
	d := sha512_384("close")
	if _, err := k.Sign(nil, d, crypto.SHA384); err != nil {
		t.Fatal(err)
	}
	tp.mu.Lock()
	tp.closer = nopCloser{}
	tp.mu.Unlock()
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	hs, err := transientHandles(tr)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 0 {
		t.Fatalf("after Close, %d transient objects remain: %v", len(hs), hs)
	}
	if _, err := k.Sign(nil, d, crypto.SHA384); !errors.Is(err, errClosed) {
		t.Fatalf("Sign after Close: err = %v, want errClosed", err)
	}
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func sha512_384(s string) []byte {
	h := crypto.SHA384.New()
	h.Write([]byte(s))
	return h.Sum(nil)
}

// A run killed mid-operation on a TPM without a resource manager leaves its
// objects loaded; a new process must still create its SRK and keys.
func TestCreateRecoversFromObjectsLeftByAKilledRun(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dead, err := Open(sw.Spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ { // fill every slot, then vanish without flushing
		_, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(dead.tr)
		if errors.Is(err, tpm2.TPMRCObjectMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	dead.mu.Lock()
	_ = dead.closer.Close() // the connection drops; the objects stay in swtpm
	dead.mu.Unlock()

	tp, raw := openSpec(t, sw.Spec)
	k, err := tp.CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatalf("CreateKey with the TPM's slots full of a dead run's objects: %v", err)
	}
	keysCSR(t, k)
	checkNoLeaks(t, tp, raw)
}
