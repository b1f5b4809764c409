package dps_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/emulator"
	"github.com/dpsagent/dpsagent/mqtt/dps"
	"github.com/dpsagent/dpsagent/tpm/keys"
)

// The emulator's injected faults, each met with the error a caller can act
// on: retry what may pass, with the wait DPS asked for.
func TestE2EFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fault     emulator.Fault
		kind      dps.Kind // 0: the registration succeeds
		retryable bool
		wait      time.Duration
	}{
		{name: "garbled answer", fault: emulator.Fault{Operation: emulator.OpRegister, Action: emulator.ActionMalformedJSON}, kind: dps.KindProtocol, retryable: true},
		{name: "hostile answer", fault: emulator.Fault{Operation: emulator.OpPoll, Action: emulator.ActionHostile}, kind: dps.KindProtocol, retryable: true},
		{name: "dropped connection", fault: emulator.Fault{Operation: emulator.OpPoll, Action: emulator.ActionDrop}, kind: dps.KindNetwork, retryable: true},
		{name: "server error", fault: emulator.Fault{Operation: emulator.OpRegister, Action: emulator.ActionError, Status: 503, RetryAfter: 4}, kind: dps.KindService, retryable: true, wait: 4 * time.Second},
		{name: "bad request", fault: emulator.Fault{Operation: emulator.OpRegister, Action: emulator.ActionError, Status: 400}, kind: dps.KindService},
		{name: "connect unavailable", fault: emulator.Fault{Operation: emulator.OpConnect, Action: emulator.ActionThrottle}, kind: dps.KindRefused, retryable: true},
		{name: "slow answer", fault: emulator.Fault{Operation: emulator.OpRegister, Action: emulator.ActionDelay, Delay: emulator.Duration(time.Second)}},
		{name: "throttled register", fault: emulator.Fault{Operation: emulator.OpRegister, Action: emulator.ActionThrottle, RetryAfter: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := []byte("e2e-fault-device-key-0123456789a")
			e, ep := startEmulator(t, symmetricEnrollment("e2e-fault", key))
			f := tt.fault
			f.Endpoint = emulator.EndpointDPS
			if _, err := e.Faults().Add(f); err != nil {
				t.Fatal(err)
			}
			_, err := client(t, ep, "e2e-fault", dps.SymmetricKey(key)).Register(context.Background(), nil, nil)
			if tt.kind == 0 {
				if err != nil {
					t.Fatalf("registration failed: %v", err)
				}
				return
			}
			de := asDPSError(t, err)
			if de.Kind != tt.kind || de.Retryable() != tt.retryable || de.RetryAfter() != tt.wait || de.Hint() == "" {
				t.Errorf("error %v: kind %v, retryable %v, retry after %s; want %v, %v, %s, with a hint",
					err, de.Kind, de.Retryable(), de.RetryAfter(), tt.kind, tt.retryable, tt.wait)
			}
		})
	}
}

// The client hands back the chain as DPS sent it and leaves judging it to
// the caller: a chain issued for another key is returned, not "fixed".
func TestE2EWrongKeyChainIsReturnedAsIs(t *testing.T) {
	t.Parallel()
	key := []byte("e2e-chain-fault-device-key-01234")
	e, ep := startEmulator(t, symmetricEnrollment("e2e-chain", key))
	if _, err := e.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointDPS, Operation: emulator.OpPoll, Action: emulator.ActionWrongKey}); err != nil {
		t.Fatal(err)
	}
	k := newKey(t, keys.ECDSAP256)
	res, err := client(t, ep, "e2e-chain", dps.SymmetricKey(key)).Register(context.Background(), csrFor(t, k, "e2e-chain"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IssuedCertificateChain) == 0 {
		t.Fatal("no chain")
	}
	for _, der := range res.IssuedCertificateChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Error("a certificate for the CSR's key came back despite the wrong_key fault")
		}
	}
}
