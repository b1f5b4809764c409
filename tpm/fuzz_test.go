package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// fuzzSeed fixes the simulator's hierarchy seeds, so its storage root key, and
// with it the parent Name in the seed blobs, is the same in every run and in
// every fuzzing worker: inputs cached by one run still reach the public-area
// parser in the next instead of stopping at the parent check.
const fuzzSeed = 20240611

// FuzzLoadKey feeds LoadKey what a damaged or hostile state directory could
// hold in a key blob file. LoadKey must never panic, and must either refuse the
// input or return a key whose Blob loads again to the same key.
//
//	go test -run '^$' -fuzz FuzzLoadKey -fuzztime 20s ./tpm/
func FuzzLoadKey(f *testing.F) {
	// One TPM for the whole fuzz function: the simulator is a process-wide
	// singleton, and LoadKey sends no command once the SRK is chosen.
	tp, err := New(tpmtest.SimulatorWithSeed(f, fuzzSeed), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = tp.Close() })

	for _, alg := range allAlgorithms {
		k, err := tp.CreateKey(alg)
		if err != nil {
			f.Fatal(err)
		}
		good := k.Blob()
		f.Add(good)
		f.Add(append(good[:len(good):len(good)], "trailing"...))
		// Valid JSON and the right parent, so these reach the public-area parser.
		var b keyBlob
		if err := json.Unmarshal(good, &b); err != nil {
			f.Fatal(err)
		}
		for _, edit := range []func(b *keyBlob){
			func(b *keyBlob) { b.Public = b.Public[:len(b.Public)/2] },
			func(b *keyBlob) { b.Public[1]++ }, // an unknown key type
			func(b *keyBlob) { b.Public = b.Public[:2] },
			func(b *keyBlob) { b.Public[3] ^= 0xff }, // an unknown name algorithm
			func(b *keyBlob) { b.Algorithm = keys.Auto },
			func(b *keyBlob) { b.Private = nil },
		} {
			c := b
			c.Public = bytes.Clone(b.Public)
			edit(&c)
			data, err := json.Marshal(c)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, s := range []string{
		``,
		`{}`,
		`null`,
		`[]`,
		`{"format":"dpsagent-tpm-key-v1"}`,
		`{"format":"dpsagent-tpm-key-v1","algorithm":"ecdsa-p256","parent_name":"","public":"AAA=","private":""}`,
		`{"format":"dpsagent-tpm-key-v1","public":null,"private":null,"parent_name":null}`,
		`{"format":"dpsagent-tpm-key-v1","extra":1}`,
		"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
		"\x00\x01\x02\xff",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := tp.LoadKey(data)
		if err != nil {
			if k != nil {
				t.Fatalf("LoadKey returned a key (%#v) together with its error %v", k, err)
			}
			return
		}
		if k.Storage() != keys.StorageTPM {
			t.Fatalf("loaded key is stored in %q, want tpm", k.Storage())
		}
		if alg, err := keys.AlgorithmOf(k.Public()); err != nil || alg != k.Algorithm() {
			t.Fatalf("loaded key says %s, its public key is %s (%v)", k.Algorithm(), alg, err)
		}
		blob := k.Blob()
		again, err := tp.LoadKey(blob)
		if err != nil {
			t.Fatalf("LoadKey accepted a blob, but not the Blob of the key it returned: %v\ninput: %q\nBlob: %q", err, data, blob)
		}
		if !bytes.Equal(again.Blob(), blob) {
			t.Fatalf("Blob does not round-trip:\nfirst:  %q\nsecond: %q", blob, again.Blob())
		}
		if again.Algorithm() != k.Algorithm() || !samePublic(again.Public(), k.Public()) {
			t.Fatal("the reloaded Blob is a different key")
		}
	})
}

func samePublic(a, b any) bool {
	switch a := a.(type) {
	case *ecdsa.PublicKey:
		return a.Equal(b)
	case *rsa.PublicKey:
		return a.Equal(b)
	}
	return false
}
