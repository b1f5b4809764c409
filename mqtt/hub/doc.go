// Package hub owns a device's session with Azure IoT Hub over MQTT 3.1.1:
// connecting with an X.509 identity or a SAS token, keeping the connection up
// (reconnecting with jittered backoff, refreshing SAS tokens), telemetry, the
// device twin, direct methods, cloud-to-device messages, and the credential
// API (issueCertificate) through which a device renews its certificate.
//
// It is a reusable component: it knows nothing about the agent's lifecycle.
// The X.509 identity is read through a callback at every connection attempt,
// so a renewed certificate is used by the next (re)connect without any other
// plumbing; Client.Reconnect makes that happen at once.
//
// The wire protocol is reference/azure-iot-mqtt.md §2. Everything the hub
// sends is parsed defensively: a malformed, oversized or unexpected message
// is logged and dropped, never trusted and never a crash.
package hub
