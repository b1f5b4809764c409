package systemd

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed: apt-get install systemd", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

var (
	buildOnce sync.Once
	binary    []byte
	buildErr  error
)

// dpsagentBinary builds the static binary once per test run.
func dpsagentBinary(t *testing.T) []byte {
	t.Helper()
	buildOnce.Do(func() {
		out := filepath.Join(os.TempDir(), "dpsagent-unit-test-"+strconv.Itoa(os.Getpid()))
		defer os.Remove(out)
		build := exec.Command("go", "build", "-o", out, "../cmd/dpsagent")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build dpsagent: %v\n%s", err, msg)
			return
		}
		binary, buildErr = os.ReadFile(out)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// scratchRoot lays out what systemd-analyze needs to check the unit as
// installed: the unit, the binary it starts, the system's own units, kill.
func scratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/dpsagent"), dpsagentBinary(t), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy system units: %v\n%s", err, out)
	}
	for _, f := range []struct {
		src, dst string
		mode     os.FileMode
	}{{"/bin/kill", "bin/kill", 0o755}, {"dpsagent.service", "etc/systemd/system/dpsagent.service", 0o644}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f.dst), data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestUnitVerifiesCleanly(t *testing.T) {
	tool := requireTool(t, "systemd-analyze")
	root := scratchRoot(t)
	cmd := exec.Command(tool, "verify", "--man=no", "--root="+root, "/etc/systemd/system/dpsagent.service")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, stderr.String())
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for dpsagent.service: ([0-9.]+)`)

func TestUnitExposureIsLow(t *testing.T) {
	tool := requireTool(t, "systemd-analyze")
	root := scratchRoot(t)
	out, err := exec.Command(tool, "security", "--offline=true", "--root="+root, "dpsagent.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposure.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security exposure: %.1f (lower is better)", level)
	if level > 2.0 {
		t.Errorf("exposure %.1f is above 2.0:\n%s", level, out)
	}
}

// The settings the agent depends on, which a well-meant hardening edit could
// break: the TPM must stay reachable, the notify protocol on.
func TestUnitKeepsWhatTheAgentNeeds(t *testing.T) {
	data, err := os.ReadFile("dpsagent.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	for _, want := range []string{"Type=notify", "WatchdogSec=", "DeviceAllow=/dev/tpmrm0 rw", "SupplementaryGroups=tss",
		"StateDirectory=dpsagent", "ExecReload=/bin/kill -HUP $MAINPID", "ConditionPathExists=/etc/dpsagent/config.yaml",
		"After=network-online.target time-sync.target", "User=dpsagent"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	if strings.Contains(unit, "PrivateDevices=yes") || strings.Contains(unit, "PrivateDevices=true") {
		t.Error("PrivateDevices hides /dev/tpmrm0")
	}
}
