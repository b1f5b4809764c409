// Package dps is the device side of Azure's Device Provisioning Service
// registration over MQTT 3.1.1: it connects with the onboarding credential (a
// SAS token from a symmetric key, or an X.509 birth certificate), sends the
// register request with an optional certificate signing request, polls the
// operation as DPS paces it, and returns the assignment and the issued
// certificate chain.
//
// A Client makes one connection per Register call and disconnects when the
// registration ends, as DPS expects: it is not a session to keep open. Errors
// are *Error values that say whether a retry can help, how long DPS asked to
// wait, and what a person should do (Hint). The issued chain is returned as
// received, in the order received: the caller identifies the leaf by its key.
//
// The protocol follows reference/azure-iot-mqtt.md §1 (api-version
// 2025-07-01-preview, the first with CSR issuance).
package dps
