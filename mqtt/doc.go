// Package mqtt is the plumbing that the DPS client (mqtt/dps) and the IoT Hub
// session (mqtt/hub) share on top of paho: whom to trust, the TLS client
// configuration with a live client-certificate callback, waiting on paho
// tokens with a context, reading the query part of Azure's response topics,
// and building the MQTT user names Azure expects.
//
// The API is deliberately small and stable, because two protocol packages are
// built on it:
//
//   - TrustConfig.Roots: the server trust pool (OS roots, Azure's roots built
//     in, an optional trust bundle file). Verification is never switched off.
//   - ClientTLS: a *tls.Config for one endpoint; the client certificate comes
//     from a callback at every handshake, so a renewed certificate is picked up
//     by the next connection without new plumbing.
//   - ParseEndpoint: "host[:port]" into the TLS server name and a dial address.
//   - ParseTopic and Topic: the path, status and query parameters ($rid,
//     retry-after, $version) of a response topic, parsed by name, never by
//     position.
//   - WaitToken: a paho token waited on with a context; refused subscriptions
//     become errors.
//   - DPSUsername, HubUsername and Escape: user names with url-encoded client
//     versions, encoded the way Microsoft's SDKs do.
//
// It does not import the agent or the TPM packages (only tpm/keys, which has
// no dependencies), and it holds no package-level mutable state.
package mqtt
