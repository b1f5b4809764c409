package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"testing"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// The figures that matter on a gateway are TPM round trips and wall time per
// operation, on the in-process reference simulator and on swtpm over TCP (and,
// with -tpm-device, on real hardware). Every benchmark reports tpmcmds/op.
//
//	go test -run '^$' -bench . -benchtime 20x ./tpm/

// connector opens a connection to one TPM that a benchmark started. Each call
// is a new *TPM with no storage root key chosen yet, as after a daemon restart;
// only one may be open at a time (swtpm serves one connection at a time).
type connector func(c *Counter) (*TPM, error)

type benchBackend struct {
	name  string
	start func(b *testing.B) connector
}

func benchBackends() []benchBackend {
	bs := []benchBackend{
		{"simulator", func(b *testing.B) connector {
			// The simulator is one object per process: every connection is a
			// new TPM value over the same transport, which stays open.
			tr := tpmtest.Simulator(b)
			return func(c *Counter) (*TPM, error) { return New(noClose{tr}, Options{Counter: c}) }
		}},
		{"swtpm", func(b *testing.B) connector {
			sw := tpmtest.StartSwtpm(b)
			return func(c *Counter) (*TPM, error) { return Open(sw.Spec, Options{Counter: c}) }
		}},
	}
	if *tpmDevice != "" {
		bs = append(bs, benchBackend{"device", func(*testing.B) connector {
			return func(c *Counter) (*TPM, error) { return Open(*tpmDevice, Options{Counter: c}) }
		}})
	}
	return bs
}

// openBench starts the backend's TPM and opens it for the whole benchmark.
func openBench(b *testing.B, bk benchBackend) *TPM {
	b.Helper()
	tp, err := bk.start(b)(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tp.Close() })
	return tp
}

// forEach runs fn as a sub-benchmark per backend and algorithm, each on a TPM
// of its own (started before, and stopped after, the measurement).
func forEach(b *testing.B, fn func(b *testing.B, tp *TPM, alg keys.Algorithm)) {
	for _, bk := range benchBackends() {
		b.Run(bk.name, func(b *testing.B) {
			for _, alg := range allAlgorithms {
				b.Run(string(alg), func(b *testing.B) { fn(b, openBench(b, bk), alg) })
			}
		})
	}
}

// reportCommands reports the TPM commands sent since before, per iteration.
// Call it after the b.Loop loop, when b.N is the number of iterations.
func reportCommands(b *testing.B, tp *TPM, before uint64) {
	b.ReportMetric(float64(tp.Commands()-before)/float64(b.N), "tpmcmds/op")
}

// benchKey creates a key and its blob outside the measurement, with the
// storage root key already chosen, as in a running daemon.
func benchKey(b *testing.B, tp *TPM, alg keys.Algorithm) (keys.Key, []byte) {
	b.Helper()
	k, err := tp.CreateKey(alg)
	if err != nil {
		b.Fatal(err)
	}
	return k, k.Blob()
}

func benchDigest(alg keys.Algorithm) ([]byte, crypto.Hash) {
	h := alg.Hash()
	w := h.New()
	w.Write([]byte("benchmark"))
	return w.Sum(nil), h
}

// verifyBench fails the benchmark if sig is not key's signature of digest, so a
// fast but broken operation cannot pass as a result.
func verifyBench(b *testing.B, key keys.Key, digest []byte, h crypto.Hash, sig []byte) {
	b.Helper()
	var ok bool
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil
	}
	if !ok {
		b.Fatalf("%s signature does not verify", key.Algorithm())
	}
}

// Key creation under an SRK that is already loaded: one TPM2_Create.
func BenchmarkCreateKey(b *testing.B) {
	forEach(b, func(b *testing.B, tp *TPM, alg keys.Algorithm) {
		benchKey(b, tp, alg) // chooses the SRK outside the measurement
		before := tp.Commands()
		for b.Loop() {
			if _, err := tp.CreateKey(alg); err != nil {
				b.Fatal(err)
			}
		}
		reportCommands(b, tp, before)
	})
}

// LoadKey only parses the blob and compares the parent's Name: no TPM command
// once the SRK is chosen. The TPM's load happens in Sign.
func BenchmarkLoadKey(b *testing.B) {
	forEach(b, func(b *testing.B, tp *TPM, alg keys.Algorithm) {
		_, blob := benchKey(b, tp, alg)
		before := tp.Commands()
		for b.Loop() {
			if _, err := tp.LoadKey(blob); err != nil {
				b.Fatal(err)
			}
		}
		reportCommands(b, tp, before)
	})
}

// What a restarted daemon pays to use a stored key: LoadKey, then its first
// signature (TPM2_Load, TPM2_Sign, TPM2_FlushContext).
func BenchmarkLoadKeyFirstSign(b *testing.B) {
	forEach(b, func(b *testing.B, tp *TPM, alg keys.Algorithm) {
		_, blob := benchKey(b, tp, alg)
		digest, h := benchDigest(alg)
		var (
			k   keys.Key
			sig []byte
		)
		before := tp.Commands()
		for b.Loop() {
			var err error
			if k, err = tp.LoadKey(blob); err != nil {
				b.Fatal(err)
			}
			if sig, err = k.Sign(nil, digest, h); err != nil {
				b.Fatal(err)
			}
		}
		reportCommands(b, tp, before)
		verifyBench(b, k, digest, h, sig)
	})
}

// A signature with a key already in hand. Keys are never kept loaded, so this
// costs the same three commands as the first signature after LoadKey.
func BenchmarkSign(b *testing.B) {
	forEach(b, func(b *testing.B, tp *TPM, alg keys.Algorithm) {
		k, _ := benchKey(b, tp, alg)
		digest, h := benchDigest(alg)
		var sig []byte
		before := tp.Commands()
		for b.Loop() {
			var err error
			if sig, err = k.Sign(nil, digest, h); err != nil {
				b.Fatal(err)
			}
		}
		reportCommands(b, tp, before)
		verifyBench(b, k, digest, h, sig)
	})
}

// A CSR as sent to DPS: one TPM signature plus the x509 encoding around it.
func BenchmarkNewCSR(b *testing.B) {
	forEach(b, func(b *testing.B, tp *TPM, alg keys.Algorithm) {
		k, _ := benchKey(b, tp, alg)
		var der []byte
		before := tp.Commands()
		for b.Loop() {
			var err error
			if der, err = keys.NewCSR(k, "gateway-001"); err != nil {
				b.Fatal(err)
			}
		}
		reportCommands(b, tp, before)
		if len(der) == 0 {
			b.Fatal("empty CSR")
		}
	})
}

// A daemon's start on a TPM without a persistent SRK: open the TPM, create the
// first key with the default algorithm (auto), close. Beside CreateKey this adds
// the curve query, the look for a persistent SRK, its creation from the
// template (TPM2_CreatePrimary, the expensive part on real chips) and its flush.
func BenchmarkOpenAndFirstKey(b *testing.B) {
	for _, bk := range benchBackends() {
		b.Run(bk.name, func(b *testing.B) {
			connect := bk.start(b)
			// One start outside the measurement: a TPM fresh from swtpm first
			// needs TPM2_Startup, which a real chip's firmware has already sent.
			if _, err := openFirstKey(connect, &Counter{}); err != nil {
				b.Fatal(err)
			}
			counter := &Counter{}
			var alg keys.Algorithm
			for b.Loop() {
				var err error
				if alg, err = openFirstKey(connect, counter); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(counter.Total())/float64(b.N), "tpmcmds/op")
			if alg != keys.ECDSAP256 && alg != keys.ECDSAP384 {
				b.Fatalf("auto created a %q key, want an ECDSA one", alg)
			}
		})
	}
}

func openFirstKey(connect connector, counter *Counter) (keys.Algorithm, error) {
	tp, err := connect(counter)
	if err != nil {
		return "", err
	}
	k, err := tp.CreateKey(keys.Auto)
	if cerr := tp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return k.Algorithm(), nil
}
