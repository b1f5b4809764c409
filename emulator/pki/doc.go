// Package pki owns the emulator's certificate authorities and the files that
// keep them across restarts:
//
//   - the device PKI (DeviceCA): a root and an issuing CA, ECDSA P-384 with
//     SHA-384 like Azure's managed PKI, that check CSRs, issue device
//     certificates, revoke them per device, and verify the chains devices
//     present to the hub;
//   - the TLS CA (ServerCA), separate from the device PKI, that signs the
//     certificates of the emulator's own listeners.
//
// Everything lives in one data directory (0700, files 0600) and is created on
// first use; later opens load the same authorities, so devices provisioned
// before a restart stay valid after it.
package pki
