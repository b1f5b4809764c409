package tpm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// blobFormat tags a stored key so a file of another kind is refused clearly.
const blobFormat = "dpsagent-tpm-key-v1"

// keyBlob is the stored form of a TPM key: the public area, the private area
// encrypted by the storage root key (usable only inside this TPM), and the Name
// of that parent so a key from another TPM, or from before a TPM clear, is
// recognised instead of failing with an integrity error.
type keyBlob struct {
	Format     string         `json:"format"`
	Algorithm  keys.Algorithm `json:"algorithm"`
	ParentName []byte         `json:"parent_name"`
	Public     []byte         `json:"public"`
	Private    []byte         `json:"private"`
}

// ErrWrongTPM is returned when a key blob was created under a different storage
// root key: another TPM, or this one before it was cleared.
var ErrWrongTPM = errors.New("the key was created by a different TPM")

// signingTemplate describes a device key. Each attribute is a decision:
func signingTemplate(alg keys.Algorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true, // never duplicated to another TPM
		FixedParent:         true, // never re-parented, even within this TPM
		SensitiveDataOrigin: true, // the TPM generated the private key; no one saw it
		UserWithAuth:        true, // usable with its (empty) password; no policy to satisfy
		SignEncrypt:         true, // a signing key; Decrypt and Restricted stay off
	}
	pub := tpm2.TPMTPublic{NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs}
	switch alg {
	case keys.ECDSAP256, keys.ECDSAP384:
		curve := tpm2.TPMECCNistP256
		if alg == keys.ECDSAP384 {
			curve = tpm2.TPMECCNistP384
		}
		pub.Type = tpm2.TPMAlgECC
		// A null scheme lets each Sign name its hash: TLS 1.2 may ask a P-384
		// key for a SHA-256 signature.
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   curve,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	case keys.RSA2048:
		pub.Type = tpm2.TPMAlgRSA
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   2048,
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	default:
		return tpm2.TPMTPublic{}, fmt.Errorf("cannot create a TPM key of algorithm %q", alg)
	}
	return pub, nil
}

// CreateKey creates a signing key under the storage root key and returns it
// unloaded; it is loaded again each time it signs.
func (t *TPM) CreateKey(alg keys.Algorithm) (keys.Key, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if alg == keys.Auto {
		resolved, err := t.autoAlgorithm()
		if err != nil {
			return nil, err
		}
		alg = resolved
	}
	if alg.IsRSA() {
		t.log.Warn("creating an RSA key: Azure's managed PKI documents EC keys only, and RSA client certificates are limited to TLS 1.2")
	}
	tmpl, err := signingTemplate(alg)
	if err != nil {
		return nil, err
	}
	parent, err := t.parent()
	if err != nil {
		return nil, err
	}
	create := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: parent.Handle, Name: parent.Name, Auth: tpm2.PasswordAuth(nil)},
		InPublic:     tpm2.New2B(tmpl),
	}
	rsp, err := create.Execute(t.tr)
	if errors.Is(err, tpm2.TPMRCObjectMemory) {
		t.log.Warn("the TPM has no free object slot; flushing objects left behind by an earlier run and retrying")
		if ferr := t.flushStale(parent.Handle); ferr != nil {
			return nil, fmt.Errorf("create %s key: TPM out of object memory, and clearing it failed: %w", alg, ferr)
		}
		rsp, err = create.Execute(t.tr)
	}
	if err != nil {
		return nil, fmt.Errorf("create %s key in TPM %s: %w", alg, t.spec, err)
	}
	blob := keyBlob{
		Format:     blobFormat,
		Algorithm:  alg,
		ParentName: parent.Name.Buffer,
		Public:     rsp.OutPublic.Bytes(),
		Private:    rsp.OutPrivate.Buffer,
	}
	k, err := t.keyFromBlob(blob)
	if err != nil {
		return nil, err
	}
	t.log.Info("created a key in the TPM", zap.String("algorithm", string(alg)))
	return k, nil
}

// LoadKey reads a blob written by Key.Blob. It checks the blob against this
// TPM's storage root key but does not load it until it signs.
func (t *TPM) LoadKey(data []byte) (keys.Key, error) {
	var blob keyBlob
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&blob); err != nil {
		return nil, fmt.Errorf("read TPM key blob: not a dpsagent TPM key (%w)", err)
	}
	if dec.More() {
		return nil, errors.New("read TPM key blob: unexpected data after the key")
	}
	if blob.Format != blobFormat {
		return nil, fmt.Errorf("read TPM key blob: format %q, expected %q", blob.Format, blobFormat)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	parent, err := t.parent()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(blob.ParentName, parent.Name.Buffer) {
		return nil, fmt.Errorf("%w (its storage root key differs from this TPM's): the state belongs to another device, or this TPM was cleared; run `dpsagent reset` to provision a new key", ErrWrongTPM)
	}
	k, err := t.keyFromBlob(blob)
	if err != nil {
		return nil, err // not k: a nil *Key in a keys.Key is not a nil interface
	}
	return k, nil
}

// keyFromBlob checks the blob's public area and builds the Key around it.
func (t *TPM) keyFromBlob(blob keyBlob) (*Key, error) {
	pub2b := tpm2.BytesAs2B[tpm2.TPMTPublic](blob.Public)
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("read TPM key blob: public area: %w", err)
	}
	cryptoPub, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("read TPM key blob: public key: %w", err)
	}
	alg, err := keys.AlgorithmOf(cryptoPub)
	if err != nil {
		return nil, fmt.Errorf("read TPM key blob: %w", err)
	}
	if alg != blob.Algorithm {
		return nil, fmt.Errorf("read TPM key blob: it says %s but holds a %s key", blob.Algorithm, alg)
	}
	raw, err := json.Marshal(blob)
	if err != nil {
		return nil, fmt.Errorf("encode TPM key blob: %w", err)
	}
	return &Key{tpm: t, blob: raw, public: pub2b, private: tpm2.TPM2BPrivate{Buffer: blob.Private}, pub: cryptoPub, alg: alg}, nil
}

// load makes the key usable for one operation, retrying once after clearing
// stale objects when the TPM is out of object slots. Callers hold t.mu and must
// flush the returned handle.
func (t *TPM) load(k *Key) (tpm2.NamedHandle, error) {
	parent, err := t.parent()
	if err != nil {
		return tpm2.NamedHandle{}, err
	}
	cmd := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: parent.Handle, Name: parent.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    k.private,
		InPublic:     k.public,
	}
	rsp, err := cmd.Execute(t.tr)
	if errors.Is(err, tpm2.TPMRCObjectMemory) {
		t.log.Warn("the TPM has no free object slot; flushing objects left behind by earlier runs and retrying")
		if ferr := t.flushStale(parent.Handle); ferr != nil {
			return tpm2.NamedHandle{}, fmt.Errorf("load key: TPM out of object memory, and clearing it failed: %w", ferr)
		}
		rsp, err = cmd.Execute(t.tr)
	}
	if err != nil {
		return tpm2.NamedHandle{}, fmt.Errorf("load %s key into TPM %s: %w", k.alg, t.spec, err)
	}
	return tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}, nil
}

// flushStale flushes every transient object except keep. Behind the kernel
// resource manager this sees only our own objects; on a raw device it clears
// what a crashed run left behind.
func (t *TPM) flushStale(keep tpm2.TPMHandle) error {
	handles, err := transientHandles(t.tr)
	if err != nil {
		return err
	}
	for _, h := range handles {
		if h == keep {
			continue
		}
		if err := flush(t.tr, h); err != nil {
			return fmt.Errorf("flush stale object 0x%08x: %w", uint32(h), err)
		}
	}
	return nil
}

// transientHandles lists the transient objects loaded in the TPM.
func transientHandles(tr transport.TPM) ([]tpm2.TPMHandle, error) {
	return handles(tr, uint32(tpm2.TPMHTTransient)<<24)
}

// TransientHandles lists the transient objects currently loaded, for leak checks.
func (t *TPM) TransientHandles() ([]tpm2.TPMHandle, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	return transientHandles(t.tr)
}

var _ keys.Key = (*Key)(nil)
