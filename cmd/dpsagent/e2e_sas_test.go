package main

import (
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// The legacy identity: DPS without a CSR, the hub with the symmetric key. The
// device ends connected with SAS, reports that it has no certificate, keeps
// no key or chain, and says so plainly; a restart does not register again.
func TestE2ELegacySASMode(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-sas-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, "identity: sas\n"+symmetricOnboarding(t, key, false))

	stdout := d.mustProvision(t)
	if !strings.Contains(stdout, "identity: sas") {
		t.Errorf("provision's summary does not say the identity is the legacy one: %q", stdout)
	}
	dev, ok := e.device(t, regID)
	if !ok || dev.Auth == nil || *dev.Auth != "sas" {
		t.Fatalf("the hub did not see a SAS connection: %s", jsonText(dev))
	}
	rep := e.reported(t, regID)
	agentProps, _ := rep["dpsAgent"].(map[string]any)
	if agentProps["identity"] != "sas" || rep["certificate"] != nil {
		t.Errorf("reported properties in sas mode: %s", jsonText(rep))
	}
	st, err := d.readState()
	if err != nil {
		t.Fatal(err)
	}
	if st.Current == nil || st.Current.KeyStorage != "sas" {
		t.Fatalf("stored identity: %s", jsonText(st))
	}

	agent := d.run(t)
	eventually(t, 30*time.Second, "the restarted agent's SAS connection", agent, func() (emuDevice, bool) {
		dev, ok := e.device(t, regID)
		return dev, ok && dev.Connected && dev.Auth != nil && *dev.Auth == "sas"
	})
	if regs := e.registrations(t, regID); len(regs) != 1 {
		t.Errorf("%d registrations after a restart, want 1", len(regs))
	}
}
