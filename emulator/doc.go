// Package emulator is iotemu's server side: a stand-in for Azure's Device
// Provisioning Service (DPS), its certificate issuance, and IoT Hub, faithful to
// the documented device protocol on the wire (topics, usernames, SAS checks,
// status codes, retry-after, JSON shapes, error codes), plus an admin API to
// create enrollments, read what devices sent, invoke methods, queue
// cloud-to-device messages, revoke certificates and inject faults.
//
// The MQTT framing lives in emulator/mqttsrv and the certificate authorities in
// emulator/pki; this package holds the service model (enrollments, devices,
// operations, faults) and the DPS and hub front-ends built on it. The hubs'
// device registry and twins are kept in the data directory across restarts
// (registry.go, registry_store.go), as the CAs are.
package emulator
