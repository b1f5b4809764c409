// Package agent is dpsagent's lifecycle: from a fresh gateway to a device
// connected to its IoT Hub with a certificate issued for a TPM-held key, and
// kept that way. It owns the state machine, the checks an issued chain must
// pass before it is trusted, and the status model shown to operators.
//
// The agent sees its collaborators only through the small interfaces in
// interfaces.go (a key backend, a DPS registrar, a hub connector, the state
// store, a clock); it imports no MQTT, TPM or configuration library, so tests
// and fleet simulations run many agents in one process with fakes or real
// parts as they choose.
package agent
