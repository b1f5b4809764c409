// Package tpm holds device keys in a TPM 2.0: opening the TPM from one string
// (a kernel device, a unix socket or a TCP port), choosing the storage root key,
// creating and loading signing keys from their blobs, and signing with them as a
// crypto.Signer that x509 and crypto/tls accept.
//
// Private keys never leave the TPM: a key is persisted as its public and private
// blobs, and the private blob is encrypted by the TPM's storage root key, so it
// can only be loaded into the TPM that created it.
//
// TPMs hold few loaded objects (the reference simulator and swtpm: three), so a
// key is loaded when it is used and flushed straight after; only the storage
// root key stays loaded for the life of the TPM value, because re-creating a
// primary key costs 100 ms or more on real chips.
package tpm
