package main

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/tpm"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// BenchmarkFreshToConnected measures a gateway's first start: from an empty
// state directory to connected, `dpsagent provision` wired in process so the
// TPM commands can be counted. The wall time is mostly the emulator's DPS
// pacing (a 3 s retry-after, as the service's), the TPM figure is the agent's.
func BenchmarkFreshToConnected(b *testing.B) {
	bins := buildBinaries(b)
	const regID = "e2e-bench-001"
	key := newSymmetricKey(b)
	e := startEmulator(b, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
	sw := tpmtest.StartSwtpm(b)
	onboarding := symmetricOnboarding(b, key, false)
	c := &cli{stdout: io.Discard, stderr: io.Discard}
	var commands uint64
	n := 0
	for b.Loop() {
		dev := newDevice(b, bins, e, regID, sw.Spec, onboarding)
		cfg, err := loadConfig(dev.cfgPath, nil)
		if err != nil {
			b.Fatal(err)
		}
		d, err := c.wire(cfg, zap.NewNop(), nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		st, err := d.agent.Provision(ctx, false)
		cancel()
		if err != nil {
			d.Close()
			b.Fatalf("provision: %v", err)
		}
		if !st.Connected && st.Certificate == nil {
			b.Fatalf("provision returned without an identity: %+v", st)
		}
		if tp, ok := d.keys.(*tpm.TPM); ok {
			commands += tp.Commands()
		} else {
			b.Fatalf("the key backend is %T, not the TPM", d.keys)
		}
		d.Close()
		n++
	}
	b.ReportMetric(float64(commands)/float64(n), "tpmcmds/op")
}
