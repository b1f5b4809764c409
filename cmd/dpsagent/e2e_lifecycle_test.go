package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// renewLimit bounds the wait for one renewal: one short certificate lifetime
// (25 s) and a margin.
const renewLimit = 45 * time.Second

// A revoked certificate makes the hub refuse the device; the agent goes back
// to DPS with its onboarding credential and comes back with a new one.
func TestE2ERevokedCertificateReprovisions(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-revoke-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	agent := d.run(t)
	first := e.waitConnected(t, regID, agent, "the agent to connect", connectLimit, nil)
	_, firstChain := d.waitStored(t, agent, first.serial())

	e.revoke(t, regID)
	second := e.waitConnected(t, regID, agent, "the agent to reconnect with a new certificate after the revocation", connectLimit, func(dev emuDevice) bool {
		return !dev.Revoked && dev.serial() != first.serial()
	})
	_, secondChain := d.waitStored(t, agent, second.serial())
	if publicKeyDER(t, firstChain[0].PublicKey) == publicKeyDER(t, secondChain[0].PublicKey) {
		t.Error("the re-provisioned certificate is for the same key as the revoked one")
	}
	if regs := e.registrations(t, regID); len(regs) != 2 {
		t.Errorf("%d registrations, want 2 (the first, and the one after the revocation): %s", len(regs), jsonText(regs))
	}
}

// Issue 5: with certificates living 25 s, the agent renews again and again
// before expiry, each time with a new TPM key, through the hub's credential
// API, reconnecting with each new certificate.
func TestE2ERenewsWithNewKeys(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-renew-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "certificates: {lifetime: 25s, credential_api_delay: 1s}\nenrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	agent := d.run(t)

	keyOf := map[string]string{} // public key -> the serial it was first seen with
	record := func(dev emuDevice) {
		t.Helper()
		_, chain := d.waitStored(t, agent, dev.serial())
		pub := publicKeyDER(t, chain[0].PublicKey)
		if serial, reused := keyOf[pub]; reused {
			t.Errorf("certificate %s is for the key of certificate %s: the renewal did not rotate the key", dev.serial(), serial)
		}
		keyOf[pub] = dev.serial()
	}
	dev := e.waitConnected(t, regID, agent, "the agent to connect", connectLimit, nil)
	record(dev)
	for i := 1; i <= 3; i++ {
		prev := dev
		dev = e.waitConnected(t, regID, agent, fmt.Sprintf("renewal %d", i), renewLimit, func(d emuDevice) bool {
			return d.serial() != prev.serial()
		})
		if !dev.Certificate.NotAfter.After(prev.Certificate.NotAfter) {
			t.Errorf("renewal %d: the new certificate expires at %s, no later than the old one (%s)", i, dev.Certificate.NotAfter, prev.Certificate.NotAfter)
		}
		record(dev)
		t.Logf("renewal %d: %s -> %s, connected again", i, prev.serial(), dev.serial())
	}
	if regs := e.registrations(t, regID); len(regs) != 1 {
		t.Errorf("%d registrations, want 1: renewals should go through the hub's credential API: %s", len(regs), jsonText(regs))
	}
	eventually(t, 10*time.Second, "the twin to report the last renewal through the hub", agent, func() (any, bool) {
		rep := e.reported(t, regID)
		ok := strings.EqualFold(fmt.Sprint(field(rep, "certificate", "serialNumber")), dev.serial()) &&
			field(rep, "dpsAgent", "lastRenewal", "path") == "hub" && field(rep, "dpsAgent", "lastRenewal", "result") == "success"
		return rep, ok
	})
}

// Renewal path 2: when the credential API refuses, the agent renews through
// DPS with its onboarding credential and stays connected.
func TestE2ERenewsThroughDPSWhenCredentialAPIFails(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-renew-dps-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "certificates: {credential_api_delay: 1s}\nenrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	agent := d.run(t)
	first := e.waitConnected(t, regID, agent, "the agent to connect", connectLimit, nil)
	_, firstChain := d.waitStored(t, agent, first.serial())

	fault := e.addFault(t, map[string]any{"endpoint": "credential_api", "device": regID, "operation": "issue",
		"action": "error", "status": 400, "count": 3})
	// SIGHUP asks for a renewal now, instead of waiting for the schedule.
	if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	second := e.waitConnected(t, regID, agent, "the agent to reconnect with a certificate renewed through DPS", connectLimit, func(dev emuDevice) bool {
		return dev.serial() != first.serial()
	})
	_, secondChain := d.waitStored(t, agent, second.serial())
	if publicKeyDER(t, firstChain[0].PublicKey) == publicKeyDER(t, secondChain[0].PublicKey) {
		t.Error("the renewed certificate is for the old key")
	}
	regs := e.registrations(t, regID)
	if len(regs) != 2 || !strings.EqualFold(regs[1].issuedSerial(), second.serial()) {
		t.Errorf("registrations: %s, want 2, the second issuing %s", jsonText(regs), second.serial())
	}
	hit := false
	for _, f := range e.faults(t) {
		hit = hit || (f.ID == fault.ID && f.Hits >= 1)
	}
	if !hit {
		t.Errorf("the credential API fault was not hit: %s", jsonText(e.faults(t)))
	}
	eventually(t, 10*time.Second, "the twin to report the renewal through DPS", agent, func() (any, bool) {
		rep := e.reported(t, regID)
		ok := strings.EqualFold(fmt.Sprint(field(rep, "certificate", "serialNumber")), second.serial()) &&
			field(rep, "dpsAgent", "lastRenewal", "path") == "dps" && field(rep, "dpsAgent", "lastRenewal", "result") == "success"
		return rep, ok
	})
	if dev, _ := e.device(t, regID); !dev.Connected || dev.serial() != second.serial() {
		t.Errorf("after the renewal the device is %s, want connected with %s", jsonText(dev), second.serial())
	}
}

// A fleet-wide renewal asked for through the device twin while the device is
// off: when it comes back it renews once, reports the request handled, and
// does not renew for it again after another restart.
func TestE2ETwinRenewalRequestMadeWhileOff(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-twin-request-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "certificates: {credential_api_delay: 1s}\nenrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	reportedRequest := func(agent *process, want string) {
		t.Helper()
		eventually(t, 10*time.Second, "reported renewRequestId "+want, agent, func() (any, bool) {
			rep := e.reported(t, regID)
			return rep, field(rep, "dpsAgent", "renewRequestId") == want
		})
	}

	agent := d.run(t)
	first := e.waitConnected(t, regID, agent, "the agent to connect", connectLimit, nil)
	reportedRequest(agent, "")
	if !agent.stop(10 * time.Second) {
		t.Fatalf("the agent did not stop on SIGTERM:\n%s", agent.tail())
	}
	patch := map[string]any{"dpsAgent": map[string]any{"renewRequestId": "rotate-2026-12"}}
	if code := e.call(t, "PATCH", "/api/devices/"+regID+"/twin/desired", patch, nil); code != 200 {
		t.Fatalf("PATCH desired: status %d", code)
	}

	agent = d.run(t)
	second := e.waitConnected(t, regID, agent, "the agent to renew for the request made while it was off", connectLimit, func(dev emuDevice) bool {
		return dev.serial() != first.serial()
	})
	reportedRequest(agent, "rotate-2026-12")
	if !agent.stop(10 * time.Second) {
		t.Fatalf("the agent did not stop on SIGTERM:\n%s", agent.tail())
	}

	agent = d.run(t)
	e.waitConnected(t, regID, agent, "the agent to reconnect", connectLimit, nil)
	time.Sleep(3 * time.Second) // a renewal would have begun by now
	if dev, _ := e.device(t, regID); dev.serial() != second.serial() {
		t.Errorf("after a restart with the request handled the device uses %s, want still %s", dev.serial(), second.serial())
	}
	if regs := e.registrations(t, regID); len(regs) != 1 {
		t.Errorf("%d registrations, want 1 (the renewal goes through the hub)", len(regs))
	}
}
