package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// connectLimit bounds a wait for a connection. The emulator answers a
// registration in about 4 s (its retry-after of 3 s, as the service's); the
// limit leaves room for a loaded 2-core machine without making a hung agent
// slow to notice.
const connectLimit = 60 * time.Second

// binaryVersion is the version the built dpsagent reports.
func binaryVersion(t testing.TB, bins binaries) string {
	t.Helper()
	out, err := exec.Command(bins.dpsagent, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "dpsagent" {
		t.Fatalf("dpsagent version printed %q", out)
	}
	return f[1]
}

// field walks a decoded JSON object.
func field(v any, path ...string) any {
	for _, k := range path {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

func TestE2EProvisionSymmetricKey(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-sym-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))

	stdout := d.mustProvision(t)
	cur := d.mustCurrent(t)
	if !strings.Contains(strings.ToUpper(stdout), strings.ToUpper(cur.Serial)) {
		t.Errorf("provision's summary does not name the stored certificate %s: %q", cur.Serial, stdout)
	}
	if cur.KeyStorage != "tpm" {
		t.Errorf("the stored key is kept in %q, want tpm", cur.KeyStorage)
	}

	dev, ok := e.device(t, regID)
	switch {
	case !ok:
		t.Fatal("the emulator does not know the device after a successful provision")
	case dev.Auth == nil || *dev.Auth != "x509": // set by the hub's CONNECT only
		t.Errorf("the device never connected to the hub with a certificate: %s", jsonText(dev))
	case !strings.EqualFold(dev.serial(), cur.Serial):
		t.Errorf("the hub saw certificate %s, the state directory holds %s", dev.serial(), cur.Serial)
	}
	if regs := e.registrations(t, regID); len(regs) != 1 || regs[0].Status != "assigned" {
		t.Errorf("registrations: %s, want one, assigned", jsonText(regs))
	}

	rep := e.reported(t, regID)
	if got := field(rep, "certificate", "serialNumber"); !strings.EqualFold(fmt.Sprint(got), cur.Serial) {
		t.Errorf("reported certificate.serialNumber = %v, want %s", got, cur.Serial)
	}
	until, err := time.Parse(time.RFC3339, fmt.Sprint(field(rep, "certificate", "validUntil")))
	wantUntil, _ := time.Parse(time.RFC3339, cur.NotAfter)
	if err != nil || !until.Equal(wantUntil) {
		t.Errorf("reported certificate.validUntil = %v (%v), want %s", field(rep, "certificate", "validUntil"), err, cur.NotAfter)
	}
	if got := field(rep, "certificate", "keyStorage"); got != "tpm" {
		t.Errorf("reported certificate.keyStorage = %v, want tpm", got)
	}
	if got, want := field(rep, "dpsAgent", "version"), binaryVersion(t, bins); got != want {
		t.Errorf("reported dpsAgent.version = %v, want %q", got, want)
	}

	d.checkPrivate(t)
	d.checkStoredIdentity(t, e, sw.Spec)
}

func TestE2EProvisionGroupKey(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-group-member-7"
	groupKey := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment("e2e-fleet", groupKey, true))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, groupKey, true))

	d.mustProvision(t)
	cur := d.mustCurrent(t)
	dev, ok := e.device(t, regID)
	if !ok || dev.Auth == nil || *dev.Auth != "x509" || !strings.EqualFold(dev.serial(), cur.Serial) {
		t.Errorf("the hub shows %s (known %t), want it connected once with certificate %s", jsonText(dev), ok, cur.Serial)
	}
	if cur.DeviceID != regID {
		t.Errorf("a group member's device ID is %q, want its registration ID %q", cur.DeviceID, regID)
	}
	d.checkStoredIdentity(t, e, sw.Spec)
}

func TestE2EProvisionX509BirthKeyInTPM(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-x509-001"
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	blob, csrFile := filepath.Join(dir, "birth.tpm"), filepath.Join(dir, "birth.csr")
	if out, err := exec.Command(bins.dpsagent, "birth-key", "--tpm", sw.Spec, "--registration-id", regID,
		"--key-out", blob, "--out", csrFile).CombinedOutput(); err != nil {
		t.Fatalf("dpsagent birth-key: %v\n%s", err, out)
	}
	certFile, caFile := signBirthCertificate(t, csrFile, dir)

	e := startEmulator(t, bins, fmt.Sprintf("enrollments:\n  - group_id: e2e-factory\n    attestation: {type: x509, ca_file: %q}\n", caFile))
	onboarding := fmt.Sprintf("onboarding:\n  method: x509\n  x509:\n    certificate_file: %q\n    key: %q\n", certFile, "tpm-blob:"+blob)
	d := newDevice(t, bins, e, regID, sw.Spec, onboarding)

	d.mustProvision(t)
	cur := d.mustCurrent(t)
	dev, ok := e.device(t, regID)
	if !ok || dev.Auth == nil || *dev.Auth != "x509" || !strings.EqualFold(dev.serial(), cur.Serial) {
		t.Errorf("the hub shows %s (known %t), want it connected once with certificate %s", jsonText(dev), ok, cur.Serial)
	}
	if regs := e.registrations(t, regID); len(regs) != 1 || regs[0].Status != "assigned" {
		t.Errorf("registrations: %s, want one, assigned", jsonText(regs))
	}
	d.checkPrivate(t)
	d.checkStoredIdentity(t, e, sw.Spec)
}

// signBirthCertificate plays the manufacturer: a CA of its own signs the
// birth-key CSR. It returns the birth certificate and CA files (PEM).
func signBirthCertificate(t testing.TB, csrFile, dir string) (certFile, caFile string) {
	t.Helper()
	csrPEM, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		t.Fatalf("%s holds no PEM block", csrFile)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("birth-key CSR signature: %v", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e manufacturing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: csr.Subject.CommonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, caFile = filepath.Join(dir, "birth.pem"), filepath.Join(dir, "factory-ca.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, caFile
}

// A restart with a valid identity connects straight to the hub: DPS asks
// devices not to register on every boot.
func TestE2ERestartDoesNotRegisterAgain(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-restart-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	d.mustProvision(t)
	provisioned := d.mustCurrent(t)

	started := time.Now()
	agent := d.run(t)
	dev := e.waitConnected(t, regID, agent, "the restarted agent to connect", connectLimit, func(dev emuDevice) bool {
		return dev.ConnectedSince != nil && dev.ConnectedSince.After(started)
	})
	if !strings.EqualFold(dev.serial(), provisioned.Serial) {
		t.Errorf("the restarted agent connected with certificate %s, want the stored %s", dev.serial(), provisioned.Serial)
	}
	if regs := e.registrations(t, regID); len(regs) != 1 {
		t.Errorf("%d registrations after a restart, want 1 (no registration on boot): %s", len(regs), jsonText(regs))
	}
	if cur := d.mustCurrent(t); cur.Serial != provisioned.Serial || cur.KeyFile != provisioned.KeyFile {
		t.Errorf("the restart changed the stored identity: %s, was %s", jsonText(cur), jsonText(provisioned))
	}
}

// Faults in DPS's answer to a registration: the agent must never store an
// identity from a bad answer, and must end up provisioned once the fault is
// gone. A bad chain is a refusal the daemon retries only after a minute or
// more, so those cases use two `dpsagent provision` runs instead.
func TestE2EProvisioningFaults(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	cases := []struct {
		action string
		extra  map[string]any
		// viaRun: the daemon retries by itself; else provision fails with
		// exit 4 and an error naming the problem, and a second one succeeds.
		viaRun     bool
		wantRegs   int
		wantStderr string
	}{
		{action: "malformed_json", viaRun: true, wantRegs: 2},
		// DPS's 429 is honoured within the registration: the poll is
		// repeated after retry-after, no new registration is needed.
		{action: "throttle", extra: map[string]any{"retry_after": 1}, viaRun: true, wantRegs: 1},
		{action: "wrong_key", wantRegs: 2, wantStderr: "no certificate in it is for our key"},
		{action: "wrong_cn", wantRegs: 2, wantStderr: "not for this device's registration ID"},
		{action: "expired", wantRegs: 2, wantStderr: "expired at"},
	}
	key := newSymmetricKey(t)
	enrollments := "enrollments:\n"
	for _, tc := range cases {
		enrollments += symmetricEnrollment("e2e-fault-"+tc.action, key, false)
	}
	e := startEmulator(t, bins, enrollments)
	for _, tc := range cases {
		t.Run(tc.action, func(t *testing.T) {
			t.Parallel()
			regID := "e2e-fault-" + tc.action
			sw := tpmtest.StartSwtpm(t)
			d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
			fault := map[string]any{"endpoint": "dps", "device": regID, "operation": "poll", "action": tc.action, "count": 1}
			for k, v := range tc.extra {
				fault[k] = v
			}
			added := e.addFault(t, fault)

			var dev emuDevice
			if tc.viaRun {
				agent := d.run(t)
				dev = e.waitConnected(t, regID, agent, "the agent to connect after the fault", connectLimit, nil)
				d.waitStored(t, agent, dev.serial())
				if !agent.stop(5*time.Second) || agent.exitCode() != exitOK {
					t.Fatalf("dpsagent run did not stop cleanly on SIGTERM (exit %d)", agent.exitCode())
				}
			} else {
				code, stdout, stderr := d.provision(t)
				if code != exitRefused {
					t.Errorf("provision with a %s answer: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.action, code, exitRefused, stdout, stderr)
				}
				for _, want := range []string{tc.wantStderr, "hint: nothing was stored"} {
					if !strings.Contains(stderr, want) {
						t.Errorf("provision's error does not say %q:\n%s", want, stderr)
					}
				}
				d.checkNothingStored(t)
				d.mustProvision(t)
				dev, _ = e.device(t, regID)
			}

			for _, f := range e.faults(t) {
				if f.ID == added.ID {
					t.Errorf("the %s fault was never used: %s", tc.action, jsonText(f))
				}
			}
			cur := d.mustCurrent(t)
			if !strings.EqualFold(cur.Serial, dev.serial()) {
				t.Errorf("the state directory holds certificate %s, the hub saw %s", cur.Serial, dev.serial())
			}
			regs := e.registrations(t, regID)
			if len(regs) != tc.wantRegs {
				t.Fatalf("%d registrations, want %d: %s", len(regs), tc.wantRegs, jsonText(regs))
			}
			last := regs[len(regs)-1]
			if last.Status != "assigned" || !strings.EqualFold(last.issuedSerial(), cur.Serial) {
				t.Errorf("the last registration is %s, want it assigned with the stored certificate %s", jsonText(last), cur.Serial)
			}
			for _, r := range regs[:len(regs)-1] {
				if strings.EqualFold(r.issuedSerial(), cur.Serial) {
					t.Errorf("the stored certificate is the one of the spoiled registration %s", r.OperationID)
				}
			}
			d.checkStoredIdentity(t, e, sw.Spec)
		})
	}
}

// The exit codes of `dpsagent provision` are a contract with scripts.
func TestE2EProvisionExitCodes(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	key := newSymmetricKey(t)
	const enrolled = "e2e-exit-enrolled"
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(enrolled, key, false))
	sw := tpmtest.StartSwtpm(t) // the subtests take turns: swtpm serves one client at a time
	for _, tc := range []struct {
		name       string
		regID      string
		change     func(t *testing.T, c *agentConfig)
		args       []string
		wantCode   int
		wantStderr []string
	}{
		{
			name: "unknown key", regID: enrolled, wantCode: exitConfig,
			change:     func(_ *testing.T, c *agentConfig) { c.Extra = "registraton_id: typo\n" },
			wantStderr: []string{`unknown key "registraton_id"`},
		},
		{
			name: "onboarding key readable by others", regID: enrolled, wantCode: exitConfig,
			change: func(t *testing.T, c *agentConfig) {
				path := filepath.Join(t.TempDir(), "world-readable.key")
				if err := os.WriteFile(path, []byte(key), 0o644); err != nil {
					t.Fatal(err)
				}
				c.Onboarding = fmt.Sprintf("onboarding:\n  method: symmetric_key\n  symmetric_key_file: %q\n", path)
			},
			wantStderr: []string{"onboarding.symmetric_key_file", "chmod 600"},
		},
		{
			name: "TPM unreachable", regID: enrolled, wantCode: exitTPM,
			change:     func(t *testing.T, c *agentConfig) { c.TPM = closedTCPSpec(t) },
			wantStderr: []string{"connect to the TPM at"},
		},
		{
			name: "no enrollment", regID: "e2e-exit-not-enrolled", wantCode: exitRefused,
			wantStderr: []string{"hint:", "enrollment"},
		},
		{
			name: "DPS unreachable", regID: enrolled, wantCode: exitNetwork, args: []string{"--timeout", "10s"},
			change:     func(t *testing.T, c *agentConfig) { c.DPSEndpoint = strings.TrimPrefix(closedTCPSpec(t), "tcp:") },
			wantStderr: []string{"cannot connect to DPS", "hint:"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDevice(t, bins, e, tc.regID, sw.Spec, symmetricOnboarding(t, key, false))
			if tc.change != nil {
				tc.change(t, &d.cfg)
				d.writeConfig(t)
			}
			code, stdout, stderr := d.provision(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stdout, "Provisioned") {
				t.Errorf("a failed provision said it provisioned: %q", stdout)
			}
			d.checkNothingStored(t)
		})
	}

	t.Run("disabled enrollment, then enabled", func(t *testing.T) {
		d := newDevice(t, bins, e, enrolled, sw.Spec, symmetricOnboarding(t, key, false))
		e.patchEnrollment(t, enrolled, map[string]any{"enabled": false})
		code, _, stderr := d.provision(t)
		if code != exitRefused || !strings.Contains(stderr, "hint:") || !strings.Contains(stderr, "disabled") {
			t.Errorf("provision with a disabled enrollment: exit %d, want %d with a hint that it is disabled:\n%s", code, exitRefused, stderr)
		}
		d.checkNothingStored(t)
		e.patchEnrollment(t, enrolled, map[string]any{"enabled": true})
		d.mustProvision(t)
		d.checkStoredIdentity(t, e, sw.Spec)
	})
}

// What `dpsagent provision` prints on a DPS failure is read by a person at a
// terminal: what failed, and what to do about it, each said once.
func TestE2EProvisionErrorSaysItOnce(t *testing.T) {
	t.Parallel()
	bins := buildBinaries(t)
	const regID = "e2e-message-001"
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(t)
	d := newDevice(t, bins, e, regID, sw.Spec, symmetricOnboarding(t, key, false))
	d.cfg.DPSEndpoint = strings.TrimPrefix(closedTCPSpec(t), "tcp:")
	d.writeConfig(t)

	code, _, stderr := d.provision(t, "--timeout", "10s")
	if code != exitNetwork {
		t.Fatalf("exit %d, want %d:\n%s", code, exitNetwork, stderr)
	}
	msg := stderr[strings.LastIndex(stderr, "dpsagent: "):] // after the log lines
	_, hint, ok := strings.Cut(msg, "\nhint: ")
	if !ok {
		t.Fatalf("no hint line:\n%s", msg)
	}
	hint = strings.TrimSpace(hint)
	for _, part := range []string{fmt.Sprintf("register %q with DPS: ", regID), hint} {
		if n := strings.Count(msg, part); n != 1 {
			t.Errorf("the message says %q %d times, want once:\n%s", part, n, msg)
		}
	}
}
