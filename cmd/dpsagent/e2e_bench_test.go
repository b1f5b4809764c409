package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

// BenchmarkConnectedMemory starts the real `dpsagent run` from a fresh state
// directory, waits until it is connected and has settled, and reports its
// resident memory (VmRSS) and peak (VmHWM), as a gateway would see them.
func BenchmarkConnectedMemory(b *testing.B) {
	bins := buildBinaries(b)
	key := newSymmetricKey(b)
	var rss, hwm, cpu float64
	n := 0
	for b.Loop() {
		regID := fmt.Sprintf("e2e-memory-%03d", n)
		e := startEmulator(b, bins, "enrollments:\n"+symmetricEnrollment(regID, key, false))
		sw := tpmtest.StartSwtpm(b)
		dev := newDevice(b, bins, e, regID, sw.Spec, symmetricOnboarding(b, key, false))
		agent := dev.run(b)
		e.waitConnected(b, regID, agent, "the agent to connect", connectLimit, nil)
		time.Sleep(2 * time.Second) // the first report and twin read are done
		status := procStatus(b, agent.cmd.Process.Pid)
		cpu += procCPU(b, agent.cmd.Process.Pid)
		rss += status["VmRSS"]
		hwm += status["VmHWM"]
		agent.stop(10 * time.Second)
		n++
	}
	b.ReportMetric(rss/float64(n), "rss-MiB")
	b.ReportMetric(hwm/float64(n), "hwm-MiB")
	b.ReportMetric(cpu/float64(n), "cpu-ms")
}

// procCPU is the user and system CPU time PID has used, in milliseconds.
func procCPU(tb testing.TB, pid int) float64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, data)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return (utime + stime) * 1000 / ticksPerSecond
}

// procStatus reads the kB fields of /proc/PID/status, in MiB.
func procStatus(tb testing.TB, pid int) map[string]float64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(rest)
		if !ok || len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[name] = kb / 1024
		}
	}
	if _, ok := out["VmRSS"]; !ok {
		tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return out
}
