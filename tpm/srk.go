package tpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"go.uber.org/zap"
)

// PersistentSRKHandle is where TCG provisioning guidance puts the ECC P-256
// storage root key (0x81000001 usually holds the RSA one).
const PersistentSRKHandle tpm2.TPMHandle = 0x81000002

type srk struct {
	handle    tpm2.NamedHandle
	transient bool // created by us with CreatePrimary, so ours to flush
}

// parent returns the storage root key, choosing it on first use: the persistent
// key at 0x81000002 when its public area is the standard ECC template, else a
// primary created from that template. Both give the same key (a primary is
// derived deterministically from the owner seed and the template), so key blobs
// work either way. Callers hold t.mu.
func (t *TPM) parent() (tpm2.NamedHandle, error) {
	if t.srk != nil {
		return t.srk.handle, nil
	}
	if h, ok := t.persistentSRK(); ok {
		t.srk = &srk{handle: h}
		t.log.Debug("using the persistent storage root key", zap.String("handle", fmt.Sprintf("0x%08x", uint32(h.Handle))))
		return h, nil
	}
	create := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}
	rsp, err := create.Execute(t.tr)
	if errors.Is(err, tpm2.TPMRCObjectMemory) {
		// A run killed mid-operation on a TPM without a resource manager
		// left its objects loaded: clear them, as a reboot would.
		t.log.Warn("the TPM has no free object slot; flushing objects left behind by an earlier run and retrying")
		if ferr := t.flushStale(0); ferr != nil {
			return tpm2.NamedHandle{}, fmt.Errorf("create the storage root key: TPM out of object memory, and clearing it failed: %w", ferr)
		}
		rsp, err = create.Execute(t.tr)
	}
	if err != nil {
		return tpm2.NamedHandle{}, fmt.Errorf("create the storage root key from the standard ECC template under the owner hierarchy: %w (if the owner hierarchy has a password, dpsagent cannot use this TPM)", err)
	}
	h := tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
	t.srk = &srk{handle: h, transient: true}
	t.log.Debug("created the storage root key from the standard ECC template")
	return h, nil
}

// persistentSRK reports the persistent SRK when it exists and matches the
// standard template. Any other key there (a different template, an RSA key) is
// left alone: using it would bind our keys to something we do not control.
func (t *TPM) persistentSRK() (tpm2.NamedHandle, bool) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: PersistentSRKHandle}.Execute(t.tr)
	if err != nil {
		return tpm2.NamedHandle{}, false
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil || !matchesSRKTemplate(pub) {
		t.log.Info("the persistent key at 0x81000002 is not the standard ECC storage root key; creating the primary from the template instead")
		return tpm2.NamedHandle{}, false
	}
	return tpm2.NamedHandle{Handle: PersistentSRKHandle, Name: rsp.Name}, true
}

// matchesSRKTemplate compares everything but the unique field, which holds the
// key's public point and so differs from the template's zeros.
func matchesSRKTemplate(pub *tpm2.TPMTPublic) bool {
	if pub.Type != tpm2.ECCSRKTemplate.Type {
		return false // and the unique field could not be swapped in below
	}
	cp := *pub
	cp.Unique = tpm2.ECCSRKTemplate.Unique
	return bytes.Equal(tpm2.Marshal(cp), tpm2.Marshal(tpm2.ECCSRKTemplate))
}
