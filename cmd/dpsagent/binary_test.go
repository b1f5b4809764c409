package main

import (
	"debug/elf"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// The shipped binary is built with CGO_ENABLED=0 and runs on gateways with
// whatever libc they have, or none. Build it as shipped and talk to a real
// swtpm with it, so the static build's TPM transport is proven, not assumed.
func TestStaticBinaryReadsSwtpm(t *testing.T) {
	bin := buildBinaries(t).dpsagent // CGO_ENABLED=0, as shipped; skipped with -short
	spec, info := swtpmInfo(t)
	assertStatic(t, bin)

	out, err := exec.Command(bin, "tpm", "info", "--tpm", spec).Output()
	if err != nil {
		t.Fatalf("dpsagent tpm info --tpm %s: %v\n%s", spec, err, stderrOf(err))
	}
	t.Logf("dpsagent tpm info:\n%s", out)
	for label, want := range map[string]string{"Manufacturer": info.Manufacturer, "Key algorithms": "ecdsa-p256, ecdsa-p384, rsa-2048"} {
		if line := lineStarting(string(out), label+"  "); !strings.Contains(line, want) {
			t.Errorf("the %q line is %q, want it to contain %q", label, line, want)
		}
	}

	// main turns the error into the documented exit code, not just run.
	closed := closedTCPSpec(t)
	err = exec.Command(bin, "tpm", "info", "--tpm", closed).Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitTPM {
		t.Errorf("dpsagent tpm info against a closed port: %v, want exit status %d", err, exitTPM)
	}
}

// assertStatic fails if the ELF file asks for a dynamic loader or libraries.
func assertStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (program header %v)", path, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", path, libs)
	}
}

func stderrOf(err error) string {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return string(exit.Stderr)
	}
	return ""
}
