package tpm

import (
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// persistAt makes a primary from tmpl and moves it to the persistent handle, as
// a provisioning tool would.
func persistAt(t *testing.T, tp *TPM, tmpl tpm2.TPMTPublic, h tpm2.TPMHandle) {
	t.Helper()
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tp.tr)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tp.tr, rsp.ObjectHandle)
	_, err = tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name},
		PersistentHandle: h,
	}.Execute(tp.tr)
	if err != nil {
		t.Fatal(err)
	}
}

func TestPersistentSRKUsedOnlyWhenStandard(t *testing.T) {
	t.Run("standard ECC SRK at 0x81000002 is used", func(t *testing.T) {
		tp, err := New(tpmtest.Simulator(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		// A key made before the SRK was persisted must still load after: the
		// persistent SRK is the same key as the primary from the template.
		before, err := tp.CreateKey(keys.ECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		persistAt(t, tp, tpm2.ECCSRKTemplate, PersistentSRKHandle)

		tp2, err := New(noClose{tp.tr}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp2.CreateKey(keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
		if n := tp2.Counter().ByCommand()["CreatePrimary"]; n != 0 {
			t.Errorf("CreatePrimary sent %d times although the persistent SRK is standard", n)
		}
		if tp2.srk == nil || tp2.srk.transient || tp2.srk.handle.Handle != PersistentSRKHandle {
			t.Fatalf("SRK = %+v, want the persistent handle", tp2.srk)
		}
		if _, err := tp2.LoadKey(before.Blob()); err != nil {
			t.Fatalf("a key created under the template primary does not load under the persistent SRK: %v", err)
		}
		info, err := tp2.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !info.PersistentSRK || !info.PersistentSRKInUse {
			t.Errorf("info = %+v, want the persistent SRK present and usable", info)
		}
	})
	t.Run("an RSA key at 0x81000002 is ignored", func(t *testing.T) {
		tp, err := New(tpmtest.Simulator(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		persistAt(t, tp, tpm2.RSASRKTemplate, PersistentSRKHandle)
		if _, err := tp.CreateKey(keys.ECDSAP256); err != nil {
			t.Fatal(err)
		}
		if tp.srk == nil || !tp.srk.transient {
			t.Fatalf("SRK = %+v, want a primary created from the ECC template", tp.srk)
		}
		info, err := tp.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !info.PersistentSRK || info.PersistentSRKInUse {
			t.Errorf("info = %+v, want the persistent key reported present but not usable", info)
		}
	})
}

// The SRK is created once per TPM value, not per key or signature.
func TestSRKCreatedOnce(t *testing.T) {
	tp, err := New(tpmtest.Simulator(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for i := 0; i < 3; i++ {
		k, err := tp.CreateKey(keys.ECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		keysCSR(t, k)
	}
	if n := tp.Counter().ByCommand()["CreatePrimary"]; n != 1 {
		t.Errorf("CreatePrimary sent %d times for three keys and CSRs, want 1", n)
	}
}

func keysCSR(t *testing.T, k keys.Key) {
	t.Helper()
	if _, err := keys.NewCSR(k, "dev"); err != nil {
		t.Fatal(err)
	}
}

type noClose struct {
	tr interface{ Send([]byte) ([]byte, error) }
}

func (n noClose) Send(b []byte) ([]byte, error) { return n.tr.Send(b) }
func (noClose) Close() error                    { return nil }
