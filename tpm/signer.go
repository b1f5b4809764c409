package tpm

import (
	"crypto"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Key is a signing key held in a TPM. It is a crypto.Signer: x509 can sign a CSR
// with it and crypto/tls can authenticate a client with it. Each signature loads
// the key, signs and flushes it (three TPM commands), so no object is left
// loaded between operations.
type Key struct {
	tpm     *TPM
	blob    []byte
	public  tpm2.TPM2BPublic
	private tpm2.TPM2BPrivate
	pub     crypto.PublicKey
	alg     keys.Algorithm
}

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Algorithm names the key type.
func (k *Key) Algorithm() keys.Algorithm { return k.alg }

// Storage is always keys.StorageTPM.
func (k *Key) Storage() keys.Storage { return keys.StorageTPM }

// Blob is the stored form: loadable only by the TPM that created the key.
func (k *Key) Blob() []byte { return append([]byte(nil), k.blob...) }

// Sign signs digest, which must be the output of opts.HashFunc(). ECDSA
// signatures are returned ASN.1 encoded; RSA ones as PKCS#1 v1.5, or PSS when
// opts is *rsa.PSSOptions and the TPM's salt length satisfies it.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	hash := opts.HashFunc()
	hashAlg, err := tpmHash(hash)
	if err != nil {
		return nil, err
	}
	if len(digest) != hash.Size() {
		return nil, fmt.Errorf("sign: digest is %d bytes, %v needs %d", len(digest), hash, hash.Size())
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	scheme := tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA}
	switch {
	case k.alg.IsRSA() && isPSS:
		scheme.Scheme = tpm2.TPMAlgRSAPSS
	case k.alg.IsRSA():
		scheme.Scheme = tpm2.TPMAlgRSASSA
	}
	scheme.Details = tpm2.NewTPMUSigScheme(scheme.Scheme, &tpm2.TPMSSchemeHash{HashAlg: hashAlg})

	sig, err := k.sign(digest, scheme)
	if err != nil {
		return nil, err
	}
	switch scheme.Scheme {
	case tpm2.TPMAlgECDSA:
		ecc, err := sig.Signature.Signature.ECDSA()
		if err != nil {
			return nil, fmt.Errorf("sign: TPM returned no ECDSA signature: %w", err)
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(ecc.SignatureR.Buffer),
			new(big.Int).SetBytes(ecc.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSAPSS:
		r, err := sig.Signature.Signature.RSAPSS()
		if err != nil {
			return nil, fmt.Errorf("sign: TPM returned no RSA-PSS signature: %w", err)
		}
		// TPMs choose the PSS salt length themselves; refuse a signature the
		// caller's verifier would reject rather than fail later in a handshake.
		if err := rsa.VerifyPSS(k.pub.(*rsa.PublicKey), hash, digest, r.Sig.Buffer, pss); err != nil {
			return nil, fmt.Errorf("sign: the TPM's RSA-PSS salt length does not meet the requested one; use PKCS#1 v1.5 (TLS 1.2) with TPM RSA keys: %w", err)
		}
		return r.Sig.Buffer, nil
	default:
		r, err := sig.Signature.Signature.RSASSA()
		if err != nil {
			return nil, fmt.Errorf("sign: TPM returned no RSA signature: %w", err)
		}
		return r.Sig.Buffer, nil
	}
}

func (k *Key) sign(digest []byte, scheme tpm2.TPMTSigScheme) (*tpm2.SignResponse, error) {
	t := k.tpm
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	h, err := t.load(k)
	if err != nil {
		return nil, err
	}
	rsp, signErr := tpm2.Sign{
		KeyHandle:  tpm2.AuthHandle{Handle: h.Handle, Name: h.Name, Auth: tpm2.PasswordAuth(nil)},
		Digest:     tpm2.TPM2BDigest{Buffer: digest},
		InScheme:   scheme,
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t.tr)
	if err := flush(t.tr, h.Handle); err != nil && signErr == nil {
		return nil, fmt.Errorf("flush key after signing: %w", err)
	}
	if signErr != nil {
		return nil, fmt.Errorf("sign with %s key in TPM %s: %w", k.alg, t.spec, signErr)
	}
	return rsp, nil
}

func tpmHash(h crypto.Hash) (tpm2.TPMAlgID, error) {
	switch h {
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("sign: hash %v is not supported (use SHA-256, SHA-384 or SHA-512)", h)
}
